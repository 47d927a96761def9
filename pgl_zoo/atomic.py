"""Atomic file writes: a temporary file beside the target, then a rename over it.

An interrupted write never leaves a half-written file under the final name; the old file, if
any, stays intact. The result gets the permissions a plain ``open(path, "w")`` would give (the
temporary file from ``mkstemp`` is private, 0o600).
"""

from __future__ import annotations

import os
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


def atomic_write(path: str | Path, write: Callable[[str], None], suffix: str = ".tmp") -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it to ``path``.

    ``suffix`` ends the temporary name (writers that choose a format by extension need the
    target's own, e.g. ".nii.gz"). On any exception the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
