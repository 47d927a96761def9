"""Finding the volumes under a folder: volume files and DICOM series, as :class:`VolumeRef` s."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import SimpleITK as sitk

from .. import messages
from ..errors import ImageReadError
from .dicom import list_dicom_series
from .files import DETACHED_HEADER_SUFFIXES, has_volume_suffix, special_file_problem, strip_volume_suffix
from .read import read_image


@dataclass(frozen=True)
class VolumeRef:
    """One volume on disk: a file, or one DICOM series (``series_uid``) inside a folder."""

    path: Path
    series_uid: str | None = None

    def read(self) -> sitk.Image:
        return read_image(self.path, self.series_uid)

    def files(self) -> list[Path]:
        """The files the volume is read from, found without opening any: a DICOM folder's visible regular
        files (every series of the folder), or the file and, for a detached header (.mhd, .nhdr), its data
        file(s). The one home of "the files of a volume" (segment's overwrite check, the pretraining cache)."""
        if self.path.is_dir():
            with os.scandir(self.path) as entries:
                return sorted(Path(e.path) for e in entries if not e.name.startswith(".") and e.is_file())
        files = [self.path]
        if self.path.name.lower().endswith(DETACHED_HEADER_SUFFIXES):
            files += sorted(p for p in self.path.parent.glob(self.path.stem + ".*") if p != self.path)
        return files

    @property
    def stem(self) -> str:
        """A name for outputs: the file name without suffix, or the DICOM folder's name."""
        return strip_volume_suffix(self.path.name)

    def __str__(self) -> str:
        return f"{self.path} [series {self.series_uid}]" if self.series_uid else str(self.path)


def discover_volumes(root: str | Path, warn: Callable[[str], None] | None = None,
                     list_series: Callable[[Path], list[str]] | None = None) -> list[VolumeRef]:
    """All volumes under ``root`` (recursive), sorted: volume files, and one entry per DICOM series.

    A folder is searched for DICOM series when it contains files without a volume suffix. Anything that
    is not a regular file or folder (a FIFO named ``case.nii.gz`` would block any reader for ever) is
    skipped with one line to ``warn`` (default: stderr), and so is the DICOM search of a folder holding
    one. ``root`` itself being such a file raises ImageReadError ("not a regular file").
    ``list_series``: how a folder's DICOM series are listed (default :func:`list_dicom_series`, which reads
    every file's header; pretraining passes one that remembers the answer per folder).
    """
    root = Path(root)
    warn = warn or messages.warn
    special = special_file_problem(root)
    if special:
        raise ImageReadError(f"{root}: {special}")
    if root.is_file():
        return [VolumeRef(root)]
    if not root.is_dir():
        raise ImageReadError(f"{root}: no such file or folder")
    found: list[VolumeRef] = []
    for folder, dirnames, filenames in os.walk(root):
        dirnames.sort()
        folder_path = Path(folder)
        others = False
        specials = []
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            problem = special_file_problem(folder_path / name)
            if problem:
                specials.append(name)
                warn(f"{folder_path / name}: skipped: {problem}")
                continue
            if has_volume_suffix(name):
                found.append(VolumeRef(folder_path / name))
            elif not name.lower().endswith((".json", ".txt", ".md", ".csv", ".raw", ".zraw", ".gz")):
                others = True
        if others and specials:
            warn(f"{folder_path}: not searched for DICOM series: it holds {specials[0]}, which is not a regular file")
        elif others:
            found.extend(VolumeRef(folder_path, uid) for uid in (list_series or list_dicom_series)(folder_path))
    return sorted(found, key=lambda v: (str(v.path), v.series_uid or ""))
