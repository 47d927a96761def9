"""Which files are volumes: their suffixes and names (nnU-Net's ``CASE_0000``), and files no reader may open.

Nothing here opens a file's contents.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
DETACHED_HEADER_SUFFIXES = (".nhdr", ".mhd")  # the pixel data live in another file


def special_file_problem(path: str | Path) -> str | None:
    """"not a regular file (a FIFO)" and the like for anything that exists but is neither a regular file
    nor a folder (opening a FIFO blocks until someone writes into it), else None."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "a character device" if stat.S_ISCHR(mode) else "a block device" if stat.S_ISBLK(mode)
            else "a special file")
    return f"not a regular file ({kind})"


def has_volume_suffix(path: str | Path) -> bool:
    return str(path).lower().endswith(VOLUME_SUFFIXES)


def strip_volume_suffix(name: str) -> str:
    """``case_001.nii.gz`` -> ``case_001`` (any of VOLUME_SUFFIXES, or a DICOM folder's name)."""
    lower = name.lower()
    for suffix in VOLUME_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def nnunet_channel(name: str) -> tuple[str, str | None]:
    """``("CASE", "0000")`` for an nnU-Net image name ``CASE_0000`` (a four-digit channel after the last
    underscore, suffix already stripped), else ``(name, None)``. The one home of nnU-Net's image naming."""
    stem, _, channel = name.rpartition("_")
    if stem and len(channel) == 4 and channel.isdigit():
        return stem, channel
    return name, None
