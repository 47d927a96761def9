"""Reading, writing and preprocessing volumes with their geometry (SimpleITK).

Axis order: numpy/torch arrays are (z, y, x); SimpleITK sizes, spacings and origins are
(x, y, z). Spacings are in millimetres. ``sitk.GetArrayFromImage`` is the one place the two
orders meet.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .atomic import atomic_write
from .cards import Preprocessing
from .errors import ImageReadError

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def has_volume_suffix(path: str | Path) -> bool:
    return str(path).lower().endswith(VOLUME_SUFFIXES)


def strip_volume_suffix(name: str) -> str:
    """``case_001.nii.gz`` -> ``case_001`` (any of VOLUME_SUFFIXES, or a DICOM folder's name)."""
    lower = name.lower()
    for suffix in VOLUME_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


@dataclass(frozen=True)
class VolumeRef:
    """One volume on disk: a file, or one DICOM series (``series_uid``) inside a folder."""

    path: Path
    series_uid: str | None = None

    def read(self) -> sitk.Image:
        return read_image(self.path, self.series_uid)

    @property
    def stem(self) -> str:
        """A name for outputs: the file name without suffix, or the DICOM folder's name."""
        return strip_volume_suffix(self.path.name)

    def __str__(self) -> str:
        return f"{self.path} [series {self.series_uid}]" if self.series_uid else str(self.path)


def list_dicom_series(folder: str | Path) -> list[str]:
    """Series instance UIDs of the DICOM series directly inside ``folder`` (not recursive)."""
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # ITK warns on every folder without DICOM
    try:
        return list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)) or [])
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


def _read_dicom_series(folder: Path, series_uid: str | None) -> sitk.Image:
    series = list_dicom_series(folder)
    if not series:
        raise ImageReadError(f"{folder}: folder holds no DICOM series and no volume file")
    if series_uid is None:
        if len(series) > 1:
            raise ImageReadError(
                f"{folder}: holds {len(series)} DICOM series; name one of: {', '.join(series)}"
            )
        series_uid = series[0]
    elif series_uid not in series:
        raise ImageReadError(f"{folder}: no DICOM series {series_uid}")
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_uid)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    return reader.Execute()


def _nifti_shortfall(path: Path) -> str | None:
    """Why a NIfTI file is incomplete, or None. ITK reads truncated NIfTI files without an error."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            header = handle.read(540)
            length = len(header) + sum(len(chunk) for chunk in iter(lambda: handle.read(1 << 20), b""))
    except (EOFError, OSError, zlib.error) as exc:
        return f"compressed data is truncated or corrupt ({exc})"
    for endian in "<>":
        if len(header) >= 348 and struct.unpack(endian + "i", header[:4])[0] == 348:
            dims = struct.unpack(endian + "8h", header[40:56])
            bitpix = struct.unpack(endian + "h", header[72:74])[0]
            offset = int(struct.unpack(endian + "f", header[108:112])[0])
            break
        if len(header) >= 540 and struct.unpack(endian + "i", header[:4])[0] == 540:
            bitpix = struct.unpack(endian + "h", header[14:16])[0]
            dims = struct.unpack(endian + "8q", header[16:80])
            offset = struct.unpack(endian + "q", header[168:176])[0]
            break
    else:
        return "not a NIfTI header"
    voxels = 1
    for n in dims[1 : 1 + max(0, min(int(dims[0]), 7))]:
        voxels *= max(int(n), 1)
    expected = offset + voxels * bitpix // 8
    if length < expected:
        return f"file is truncated ({length} of {expected} bytes)"
    return None


def read_image(path: str | Path, series_uid: str | None = None) -> sitk.Image:
    """Read a 3D scalar volume: a NIfTI/NRRD/MHA/MHD file or a DICOM series folder.

    Raises ImageReadError (one line naming the file) when the file is missing, unreadable,
    not 3D (fewer than 2 voxels along an axis), multi-component, or empty.
    """
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"{path}: no such file or folder")
    try:
        if path.is_dir():
            image = _read_dicom_series(path, series_uid)
        else:
            image = sitk.ReadImage(str(path))
            if path.name.lower().endswith((".nii", ".nii.gz")):
                problem = _nifti_shortfall(path)
                if problem:
                    raise ImageReadError(f"{path}: {problem}")
    except RuntimeError as exc:
        detail = str(exc).strip().splitlines()[-1].replace("sitk::ERROR:", "").replace(f'"{path}"', "").strip()
        raise ImageReadError(f"{path}: cannot be read as an image ({' '.join(detail.split())[:160]})") from None
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ImageReadError(f"{path}: has {image.GetNumberOfComponentsPerPixel()} components; need a scalar volume")
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]
    size = image.GetSize()
    if image.GetDimension() != 3 or min(size) < 2:
        raise ImageReadError(f"{path}: is not a 3D volume (size {'x'.join(map(str, size))})")
    return image


def discover_volumes(root: str | Path) -> list[VolumeRef]:
    """All volumes under ``root`` (recursive), sorted: volume files, and one entry per DICOM series.

    A folder is searched for DICOM series when it contains files without a volume suffix.
    """
    root = Path(root)
    if root.is_file():
        return [VolumeRef(root)]
    if not root.is_dir():
        raise ImageReadError(f"{root}: no such file or folder")
    found: list[VolumeRef] = []
    for folder, dirnames, filenames in os.walk(root):
        dirnames.sort()
        folder_path = Path(folder)
        others = False
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            if has_volume_suffix(name):
                found.append(VolumeRef(folder_path / name))
            elif not name.lower().endswith((".json", ".txt", ".md", ".csv", ".raw", ".zraw", ".gz")):
                others = True
        if others:
            found.extend(VolumeRef(folder_path, uid) for uid in list_dicom_series(folder_path))
    return sorted(found, key=lambda v: (str(v.path), v.series_uid or ""))


def reorient(image: sitk.Image, orientation: str = "LPS") -> sitk.Image:
    """Permute and flip axes so that the direction matrix is closest to ``orientation``."""
    return sitk.DICOMOrient(image, orientation)


def resample_to_spacing(
    image: sitk.Image,
    spacing_xyz_mm: tuple[float, float, float],
    interpolator: int = sitk.sitkLinear,
    default_value: float | None = None,
) -> sitk.Image:
    """Resample onto a grid with the same origin and direction and the given spacing (x, y, z) mm.

    The new size covers the same physical extent (rounded to whole voxels, at least 1).
    Points outside the input take ``default_value`` (the image minimum when None).
    """
    old_spacing = image.GetSpacing()
    if tuple(round(s, 6) for s in old_spacing) == tuple(round(s, 6) for s in spacing_xyz_mm):
        return image
    size = [max(1, int(round(n * o / s))) for n, o, s in zip(image.GetSize(), old_spacing, spacing_xyz_mm,
                                                              strict=True)]
    if default_value is None:
        default_value = float(sitk.GetArrayViewFromImage(image).min())
    return sitk.Resample(
        image, size, sitk.Transform(), interpolator, image.GetOrigin(), tuple(spacing_xyz_mm),
        image.GetDirection(), default_value, image.GetPixelID(),
    )


def normalize_intensities(
    array: np.ndarray, window: tuple[float, float] | None, normalization: str
) -> np.ndarray:
    """Clip to ``window`` (scan units, e.g. HU) and normalise; returns float32 of the same shape."""
    out = np.asarray(array, dtype=np.float32)
    if window is not None:
        out = np.clip(out, window[0], window[1])
    if normalization == "zscore":
        std = float(out.std())
        out = (out - float(out.mean())) / (std if std > 1e-8 else 1.0)
    elif normalization == "minmax":
        lo, hi = window  # type: ignore[misc]
        out = (out - lo) / (hi - lo)
    elif normalization != "none":
        raise ValueError(f"unknown normalization {normalization!r}")
    return out.astype(np.float32, copy=False)


@dataclass
class PreprocessedVolume:
    """Network-ready intensities and the grid they live on.

    ``array``: float32 (z, y, x). ``grid``: a SimpleITK image with the geometry (size, spacing,
    origin, direction) of ``array``; ``original``: the image as read, to map results back.
    """

    array: np.ndarray
    grid: sitk.Image
    original: sitk.Image


def preprocess_image(image: sitk.Image, prep: Preprocessing) -> PreprocessedVolume:
    """Reorient, resample (linear) to ``prep.spacing_xyz_mm``, clip to the window, normalise."""
    resampled = reorient(sitk.Cast(image, sitk.sitkFloat32), prep.orientation)
    if prep.spacing_xyz_mm is not None:
        resampled = resample_to_spacing(resampled, prep.spacing_xyz_mm, sitk.sitkLinear)
    array = normalize_intensities(sitk.GetArrayFromImage(resampled), prep.window, prep.normalization)
    return PreprocessedVolume(array=array, grid=resampled, original=image)


def preprocess_label(label: sitk.Image, grid: sitk.Image) -> np.ndarray:
    """A label map resampled (nearest neighbour) onto a preprocessed grid; int64 (z, y, x)."""
    out = sitk.Resample(label, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0, label.GetPixelID())
    return sitk.GetArrayFromImage(out).astype(np.int64)


def image_from_array(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    """Wrap a (z, y, x) array as an image with the reference's spacing, origin and direction."""
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    return image


def restore_label(label_zyx: np.ndarray, grid: sitk.Image, original: sitk.Image) -> sitk.Image:
    """Map a label map on the preprocessed ``grid`` back to the ``original`` image's geometry.

    Nearest-neighbour resampling in physical space: the result has exactly the original's size,
    spacing, origin and direction, and is an unsigned 8-bit (or 16-bit if needed) label image.
    """
    dtype = np.uint8 if int(label_zyx.max(initial=0)) < 256 else np.uint16
    label = image_from_array(np.ascontiguousarray(label_zyx.astype(dtype)), grid)
    return sitk.Resample(label, original, sitk.Transform(), sitk.sitkNearestNeighbor, 0, label.GetPixelID())


def write_image(image: sitk.Image, path: str | Path, compress: bool = True) -> Path:
    """Write atomically: to a temporary file beside ``path``, then rename over it."""
    path = Path(path)
    suffix = next((s for s in VOLUME_SUFFIXES if path.name.lower().endswith(s)), path.suffix)
    return atomic_write(path, lambda tmp: sitk.WriteImage(image, tmp, compress), suffix=suffix)
