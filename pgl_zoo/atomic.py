"""Atomic file writes: a temporary file beside the target, then a rename over it.

An interrupted write never leaves a half-written file under the final name; the old file, if
any, stays intact. The result gets the permissions a plain ``open(path, "w")`` would give (the
temporary file from ``mkstemp`` is private, 0o600).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path


def _read_umask() -> int | None:
    """The process umask from /proc (Linux >= 4.7), without changing it; None where unavailable."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _umask_at_import() -> int:
    # Read once while importing (a single thread then); used only where /proc does not tell.
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


_IMPORT_UMASK = _read_umask()
if _IMPORT_UMASK is None:
    _IMPORT_UMASK = _umask_at_import()


def default_file_mode() -> int:
    """0o666 less the process umask: what a plain ``open(path, "w")`` would give.

    The umask is read from /proc/self/status, never by setting it (``os.umask`` changes it for every
    thread, so a file created meanwhile by another thread would get the wrong mode).
    """
    umask = _read_umask()
    return 0o666 & ~(umask if umask is not None else _IMPORT_UMASK)


# How writers that swallow the OSError report a failed write: torch.save ("[enforce fail at
# inline_container.cc:...] unexpected pos ..." or "PytorchStreamWriter failed writing file ..."),
# safetensors ("Error while serializing: I/O error: No space left on device (os error 28)").
_WRITE_FAILURE_MARKERS = ("enforce fail", "PytorchStreamWriter", "file write failed", "IoError", "I/O error",
                          "os error")


class RecordingFile:
    """A binary file object that remembers the OSError of a failed ``write`` (torch.save turns it into
    a RuntimeError that no longer says "no space left on device"); see :func:`write_failure`."""

    def __init__(self, handle) -> None:
        self.handle = handle
        self.error: OSError | None = None

    def write(self, data) -> int:
        try:
            return self.handle.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self.handle.flush()

    def fileno(self) -> int:
        return self.handle.fileno()


def write_failure(path: str | Path, exc: BaseException, cause: OSError | None = None):
    """The :class:`pgl_zoo.errors.WriteError` naming ``path`` and the reason for ``exc`` when it is a failed
    write (an OSError, or a writer's RuntimeError about one; ``cause``: the OSError behind it, when a
    :class:`RecordingFile` caught it), else None. Without a known cause the free space of the folder
    decides between "no space left on device" and a general failed write."""
    import errno as errno_module

    from .errors import PglZooError, WriteError

    if isinstance(exc, PglZooError):
        return None
    if isinstance(exc, OSError):
        cause = exc
    elif not any(marker in str(exc) for marker in _WRITE_FAILURE_MARKERS):
        return None
    os_error = re.search(r"os error (\d+)", str(exc))
    if cause is not None:
        reason, code = cause.strerror or str(cause), cause.errno
    elif os_error:
        code = int(os_error.group(1))
        reason = os.strerror(code)
    else:
        try:
            stats = os.statvfs(Path(path).parent)
            full = stats.f_bavail * stats.f_frsize < (1 << 20)
        except OSError:
            full = False
        reason = "No space left on device" if full else "the write failed (disk full or a file size limit?)"
        code = errno_module.ENOSPC if full else None
    return WriteError(f"{path}: cannot be written ({reason}); nothing was replaced", code, reason)


def atomic_write(path: str | Path, write: Callable[[str], None], suffix: str = ".tmp") -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it to ``path``.

    ``suffix`` ends the temporary name (writers that choose a format by extension need the
    target's own, e.g. ".nii.gz"). On any exception the temporary file is removed. A failed write (an
    OSError such as no space left on device or a file size limit, or a writer's RuntimeError about one,
    as torch.save raises) becomes :class:`pgl_zoo.errors.WriteError`, one line naming ``path`` and the
    reason (an OSError too).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise write_failure(path, exc) from None
    try:
        write(tmp)
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        failure = write_failure(path, exc)
        if failure is not None:
            raise failure from None
        raise
    return path
