"""Writing a volume: atomically, and read back before it replaces anything."""

from __future__ import annotations

from pathlib import Path

import SimpleITK as sitk

from ..atomic import atomic_write
from ..errors import ImageWriteError
from .files import VOLUME_SUFFIXES
from .nifti_header import nifti_shortfall


def _written_problem(tmp: Path, image: sitk.Image) -> str | None:
    """Why a freshly written file does not hold ``image`` (ITK does not report every failed write)."""
    if not tmp.is_file() or tmp.stat().st_size == 0:
        return "the written file is empty"
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(tmp))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return "the written file has no readable header"
    if tuple(reader.GetSize()) != tuple(image.GetSize()):
        return f"the written header says size {reader.GetSize()}, not {image.GetSize()}"
    if tmp.name.lower().endswith((".nii", ".nii.gz")):
        return nifti_shortfall(tmp)
    try:
        sitk.ReadImage(str(tmp))
    except RuntimeError:
        return "the written pixel data do not read back"
    return None


def write_image(image: sitk.Image, path: str | Path, compress: bool = True) -> Path:
    """Write atomically and verified: to a temporary file beside ``path``, read back (header, size,
    for NIfTI the byte count), then renamed over ``path``. A failed write raises ImageWriteError and
    leaves an existing file at ``path`` untouched."""
    path = Path(path)
    suffix = next((s for s in VOLUME_SUFFIXES if path.name.lower().endswith(s)), path.suffix)

    def write(tmp: str) -> None:
        try:
            sitk.WriteImage(image, tmp, compress)
        except RuntimeError as exc:
            detail = " ".join(str(exc).strip().splitlines()[-1:]).replace("sitk::ERROR:", "").strip()
            raise ImageWriteError(f"{path}: cannot be written ({detail[:160]})") from None
        problem = _written_problem(Path(tmp), image)
        if problem:
            raise ImageWriteError(f"{path}: write failed ({problem}; disk full?); nothing was replaced")

    try:
        return atomic_write(path, write, suffix=suffix)
    except OSError as exc:
        raise ImageWriteError(f"{path}: cannot be written ({exc.strerror or exc}); nothing was replaced") from None
