"""Exceptions of pgl-zoo. Each message is one line that names the file or model and the problem."""


class PglZooError(Exception):
    """Base class: the CLI prints these as one line and exits non-zero."""


class UnknownModelError(PglZooError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class WeightsNotAvailableError(PglZooError):
    """The card has no published weights and no local copy was given."""


class ChecksumError(PglZooError):
    """A weights file's sha256 differs from the one recorded for it."""


class LoadError(PglZooError):
    """Weights do not fit the architecture (missing, unexpected or mis-shaped keys) under strict loading."""


class ImageReadError(PglZooError):
    """A volume could not be read, or is not a usable 3D image."""


class DataError(PglZooError):
    """A data set is empty, inconsistent or mislabelled."""


class ImageWriteError(PglZooError):
    """A written file did not read back as written (full disk, failed write); the old file is kept."""


class RunError(PglZooError):
    """A run folder is locked, unreadable, or does not match the options given to resume it."""


class OverwriteError(PglZooError):
    """A command would replace files it did not write itself; pass --overwrite to allow it."""


class WriteError(PglZooError, OSError):
    """A file could not be written (no space left on device, file size limit, read-only disk); the message
    names the file and the reason, and nothing under that name was replaced. An OSError too, so that
    callers which fall back on a failed write (the preprocessing cache) still do."""

    def __init__(self, message: str, errno: int | None = None, strerror: str | None = None) -> None:
        super().__init__(message)
        self.message, self.errno, self.strerror = message, errno, strerror

    def __str__(self) -> str:
        return self.message
