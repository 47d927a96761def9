"""Reading, writing and preprocessing volumes with their geometry (SimpleITK).

Axis order: numpy/torch arrays are (z, y, x); SimpleITK sizes, spacings and origins are
(x, y, z). Spacings are in millimetres. ``sitk.GetArrayFromImage`` is the one place the two
orders meet.
"""

from __future__ import annotations

import gzip
import os
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .atomic import atomic_write
from .cards import Preprocessing
from .errors import ImageReadError, ImageWriteError

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
DETACHED_HEADER_SUFFIXES = (".nhdr", ".mhd")  # the pixel data live in another file
DEFAULT_MAX_VOXELS = 2**31  # 8 GiB as float32; PGL_ZOO_MAX_VOXELS raises or lowers it
MAX_DEFLATE_RATIO = 1032  # deflate (gzip, zlib) never expands data by more than about 1032:1


def max_voxels() -> int:
    """The largest volume read_image accepts (``$PGL_ZOO_MAX_VOXELS``, default 2**31)."""
    try:
        return int(os.environ.get("PGL_ZOO_MAX_VOXELS", DEFAULT_MAX_VOXELS))
    except ValueError:
        return DEFAULT_MAX_VOXELS


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
    problem = dicom_spacing_problem(files)
    if problem:
        raise ImageReadError(f"{folder}: {problem}; stacked on a uniform grid its geometry would be wrong")
    _check_header(folder, files[0], slices=len(files))
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    return reader.Execute()


def dicom_spacing_problem(files: list[str], tolerance: float = 1.5) -> str | None:
    """Why the slices of a DICOM series are not evenly spaced (missing slices, mixed stacks), or None
    (fine, or positions unknown). The one check used by read_image and, through it, pretraining."""
    positions = []
    for name in files:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(name))
        try:
            reader.ReadImageInformation()
            positions.append([float(v) for v in reader.GetMetaData("0020|0032").split("\\")])
        except (RuntimeError, ValueError):
            return None
    if len(positions) < 3:
        return None
    gaps = np.linalg.norm(np.diff(np.asarray(positions), axis=0), axis=1)
    if gaps.min() <= 1e-6:
        return "DICOM series has slices at duplicate positions"
    if gaps.max() / gaps.min() > tolerance:
        return f"DICOM series has non-uniform slice spacing (gaps {gaps.min():.2f} to {gaps.max():.2f} mm)"
    return None


def _bytes_per_voxel(pixel_id: int, components: int) -> int:
    text = sitk.GetPixelIDValueAsString(pixel_id)
    bits = re.search(r"(\d+)-bit", text)
    size = int(bits.group(1)) // 8 if bits else 1
    return size * max(1, components) * (2 if "complex" in text else 1)


def _check_header(path: Path, header_file: str | Path, slices: int = 1) -> None:
    """Refuse, before any pixel is read, a volume larger than max_voxels() or one whose header claims
    more pixel data than its file could hold (even at deflate's maximum compression ratio)."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(header_file))
    reader.ReadImageInformation()
    size = list(reader.GetSize())
    if slices > 1:
        size = size[:2] + [slices]
    voxels = 1
    for n in size:
        voxels *= max(int(n), 1)
    shape = "x".join(map(str, size))
    if voxels > max_voxels():
        raise ImageReadError(f"{path}: header claims {shape} voxels ({voxels:,}), more than the limit "
                             f"{max_voxels():,} (set PGL_ZOO_MAX_VOXELS to change it)")
    if slices > 1 or str(header_file).lower().endswith(DETACHED_HEADER_SUFFIXES):
        return
    claimed = voxels * _bytes_per_voxel(reader.GetPixelID(), reader.GetNumberOfComponents())
    available = os.path.getsize(header_file)
    if claimed > available * MAX_DEFLATE_RATIO:
        raise ImageReadError(f"{path}: header claims {shape} voxels ({claimed:,} bytes) but the file has only "
                             f"{available:,} bytes: truncated or corrupt")


def _nifti_shortfall(path: Path, check_finite: bool = False) -> str | None:
    """Why a NIfTI file is incomplete (or, with ``check_finite``, holds NaN/inf floats), or None.

    ITK reads truncated NIfTI files without an error, and turns NaN voxels into 0 on read, so both
    are checked here on the raw bytes (streamed: no volume-sized buffer).
    """
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            header = handle.read(540)
            parsed = _nifti_header(header)
            if parsed is None:
                return "not a NIfTI header"
            endian, dims, datatype, bitpix, offset = parsed
            dtype = {16: "f4", 64: "f8"}.get(datatype) if check_finite else None
            length, bad, carry = 0, 0, b""
            size = int(dtype[1]) if dtype else 1
            for chunk in (header, *iter(lambda: handle.read(1 << 20), b"")):
                if dtype:
                    data = carry + chunk[max(0, offset - length):]
                    usable = len(data) - len(data) % size
                    bad += int(np.count_nonzero(~np.isfinite(np.frombuffer(data[:usable], dtype=endian + dtype))))
                    carry = data[usable:]
                length += len(chunk)
    except (EOFError, OSError, zlib.error) as exc:
        return f"compressed data is truncated or corrupt ({exc})"
    voxels = 1
    for n in dims[1 : 1 + max(0, min(int(dims[0]), 7))]:
        voxels *= max(int(n), 1)
    expected = offset + voxels * bitpix // 8
    if length < expected:
        return f"file is truncated ({length} of {expected} bytes)"
    if bad:
        return f"contains {bad} NaN or infinite voxel(s); replace them before use"
    return None


def _nifti_header(header: bytes) -> tuple[str, tuple[int, ...], int, int, int] | None:
    """(endian, dims, datatype, bitpix, data offset) of a NIfTI-1 or NIfTI-2 header, or None."""
    for endian in "<>":
        if len(header) >= 348 and struct.unpack(endian + "i", header[:4])[0] == 348:
            dims = struct.unpack(endian + "8h", header[40:56])
            datatype, bitpix = struct.unpack(endian + "hh", header[70:74])
            offset = int(struct.unpack(endian + "f", header[108:112])[0])
            return endian, dims, datatype, bitpix, offset
        if len(header) >= 540 and struct.unpack(endian + "i", header[:4])[0] == 540:
            datatype, bitpix = struct.unpack(endian + "hh", header[12:16])
            dims = struct.unpack(endian + "8q", header[16:80])
            offset = struct.unpack(endian + "q", header[168:176])[0]
            return endian, dims, datatype, bitpix, offset
    return None


def read_image(path: str | Path, series_uid: str | None = None, check_finite: bool = True) -> sitk.Image:
    """Read a 3D scalar volume: a NIfTI/NRRD/MHA/MHD file or a DICOM series folder.

    Raises ImageReadError (one line naming the file) when the file is missing, unreadable,
    not 3D (fewer than 2 voxels along an axis), multi-component, or empty; when its header claims
    more voxels than ``max_voxels()`` or more data than the file can hold (checked before any pixel
    is read); when a DICOM series has missing or unevenly spaced slices; and, with
    ``check_finite``, when a voxel is NaN or infinite.
    """
    path = Path(path)
    if not path.exists():
        kind = "dangling symbolic link" if path.is_symlink() else "no such file or folder"
        raise ImageReadError(f"{path}: {kind}")
    try:
        if path.is_dir():
            image = _read_dicom_series(path, series_uid)
        else:
            _check_header(path, path)
            if path.name.lower().endswith((".nii", ".nii.gz")):
                problem = _nifti_shortfall(path, check_finite)
                if problem:
                    raise ImageReadError(f"{path}: {problem}")
            image = sitk.ReadImage(str(path))
    except OSError as exc:
        raise ImageReadError(f"{path}: cannot be read ({exc.strerror or exc})") from None
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
    if check_finite and image.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64):
        bad = int(np.count_nonzero(~np.isfinite(sitk.GetArrayViewFromImage(image))))
        if bad:
            raise ImageReadError(f"{path}: contains {bad} NaN or infinite voxel(s); replace them before use")
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
    """Permute and flip axes so that the direction matrix is closest to ``orientation``.

    An image already in that orientation is returned as is (``DICOMOrient`` would copy its pixels).
    """
    if sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(image.GetDirection()) == orientation:
        return image
    return sitk.DICOMOrient(image, orientation)


def resample_to_spacing(
    image: sitk.Image,
    spacing_xyz_mm: tuple[float, float, float],
    interpolator: int | None = None,
    default_value: float | None = None,
    pixel_type: int | None = None,
) -> sitk.Image:
    """Resample onto a grid with the same origin and direction and the given spacing (x, y, z) mm.

    The new size covers the same physical extent (rounded to whole voxels, at least 1).
    ``interpolator``: a SimpleITK interpolator (default ``sitk.sitkLinear``).
    Points outside the input take ``default_value`` (the image minimum when None).
    ``pixel_type``: the output's SimpleITK pixel type (default: the input's). Interpolation runs in
    double precision either way, so an int16 scan resampled to ``sitk.sitkFloat32`` equals the scan
    cast to float32 first and then resampled, without the full-size float copy. An image already at
    the spacing is returned as is (in its own pixel type).
    """
    if interpolator is None:
        interpolator = sitk.sitkLinear
    old_spacing = image.GetSpacing()
    if tuple(round(s, 6) for s in old_spacing) == tuple(round(s, 6) for s in spacing_xyz_mm):
        return image
    size = [max(1, int(round(n * o / s))) for n, o, s in zip(image.GetSize(), old_spacing, spacing_xyz_mm,
                                                              strict=True)]
    if default_value is None:
        default_value = float(sitk.GetArrayViewFromImage(image).min())
    return sitk.Resample(
        image, size, sitk.Transform(), interpolator, image.GetOrigin(), tuple(spacing_xyz_mm),
        image.GetDirection(), default_value, image.GetPixelID() if pixel_type is None else pixel_type,
    )


@dataclass(frozen=True)
class IntensityMap:
    """The intensity part of preprocessing as one map: ``clip(value, *window) * scale + shift``.

    ``window``: (low, high) in scan units (e.g. HU), or None for no clipping. Built from a volume by
    :func:`intensity_map`; applied to a whole array by :func:`normalize_intensities` or window by
    window by :func:`pgl_zoo.inference.predict_label` (so a large scan need not exist in float32).
    """

    window: tuple[float, float] | None
    scale: float
    shift: float

    def apply_(self, values):
        """Apply in place to a float32 numpy array or float torch tensor (any shape); returns it.

        Both kinds get the same float32 operations (clip, multiply, add), so a volume mapped whole
        equals the same volume mapped window by window, bit for bit.
        """
        if isinstance(values, np.ndarray):
            if self.window is not None:
                np.clip(values, self.window[0], self.window[1], out=values)
            if (self.scale, self.shift) != (1.0, 0.0):
                values *= np.float32(self.scale)
                values += np.float32(self.shift)
            return values
        if self.window is not None:
            values.clamp_(self.window[0], self.window[1])
        if (self.scale, self.shift) != (1.0, 0.0):
            values.mul_(self.scale).add_(self.shift)
        return values


def intensity_map(array: np.ndarray, window: tuple[float, float] | None, normalization: str) -> IntensityMap:
    """The map that clips ``array`` (any numeric dtype, scan units) to ``window`` and normalises it:
    ``zscore`` (mean 0, standard deviation 1 after clipping; statistics in float64), ``minmax``
    (the window onto [0, 1]) or ``none``."""
    if normalization not in ("zscore", "minmax", "none"):
        raise ValueError(f"unknown normalization {normalization!r}")
    window = None if window is None else (float(window[0]), float(window[1]))
    if normalization == "zscore":
        mean, std = _mean_std(array, window)
        std = std if std > 1e-8 else 1.0
        return IntensityMap(window, 1.0 / std, -mean / std)
    if normalization == "minmax":
        if window is None:
            raise ValueError("minmax normalization needs a window")
        lo, hi = window
        return IntensityMap(window, 1.0 / (hi - lo), -lo / (hi - lo))
    return IntensityMap(window, 1.0, 0.0)


def normalize_intensities(
    array: np.ndarray, window: tuple[float, float] | None, normalization: str, inplace: bool = False
) -> np.ndarray:
    """Clip to ``window`` (scan units, e.g. HU) and normalise (:func:`intensity_map`); returns float32
    of the same shape.

    ``inplace``: a float32 ``array`` is overwritten instead of copied (no volume-sized temporaries).
    """
    mapping = intensity_map(array, window, normalization)
    if inplace and isinstance(array, np.ndarray) and array.dtype == np.float32 and array.flags.writeable:
        out = array
    else:
        out = np.array(array, dtype=np.float32)
    return mapping.apply_(out)


def _mean_std(array: np.ndarray, window: tuple[float, float] | None = None,
              chunk: int = 1 << 22) -> tuple[float, float]:
    """Mean and standard deviation of all elements (clipped to ``window``), in float64, a chunk at a
    time (``ndarray.std`` would allocate a temporary as large as the volume)."""
    flat = np.asarray(array).reshape(-1)
    n = max(flat.size, 1)

    def chunks():
        for start in range(0, flat.size, chunk):
            part = flat[start : start + chunk].astype(np.float64)
            if window is not None:
                np.clip(part, window[0], window[1], out=part)
            yield part

    mean = sum(float(part.sum()) for part in chunks()) / n
    squares = 0.0
    for part in chunks():
        part -= mean
        squares += float(np.dot(part, part))
    return mean, (squares / n) ** 0.5


@dataclass(frozen=True)
class ImageGeometry:
    """Where an image's voxels lie: size and spacing (x, y, z; mm), origin (mm) and direction
    (row-major 3 x 3), as SimpleITK reports them. Holds no pixels."""

    size: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]

    @classmethod
    def of(cls, image: sitk.Image) -> ImageGeometry:
        return cls(tuple(image.GetSize()), tuple(image.GetSpacing()), tuple(image.GetOrigin()),
                   tuple(image.GetDirection()))


@dataclass
class PreprocessedVolume:
    """Network-ready intensities and the grid they live on.

    ``array``: (z, y, x), float32, or the scan's own values when ``intensity`` is set.
    ``grid``: a SimpleITK image with the geometry (size, spacing,
    origin, direction) of ``array`` (geometry only: an 8-bit image of zeros, to save memory);
    ``original``: the image as read, or only its :class:`ImageGeometry` (to map results back
    without keeping the scan's pixels in memory). ``intensity``: None when ``array`` is the
    normalised float32 input; else ``array`` holds scan values and this map gives the input.
    """

    array: np.ndarray
    grid: sitk.Image
    original: sitk.Image | ImageGeometry
    intensity: IntensityMap | None = None


def preprocess_image(image: sitk.Image, prep: Preprocessing, defer_intensity: bool = False) -> PreprocessedVolume:
    """Reorient, resample (linear) to ``prep.spacing_xyz_mm``, clip to the window, normalise.

    Memory: the scan keeps its pixel type through reorientation and resampling (which writes float32
    directly), and the network's float32 array is the only volume-sized copy made from it (a 512 x
    512 x 300 int16 CT at native spacing: 300 MiB beside the scan's 150 MiB).

    ``defer_intensity``: where nothing was resampled and the scan has integer pixels, return its
    values as they are (``array`` in the scan's dtype, e.g. int16) with ``intensity`` set to the map
    that :func:`pgl_zoo.inference.predict_label` applies window by window; the float32 volume is
    never made. Otherwise (and by default) ``array`` is normalised float32 and ``intensity`` None.
    """
    resampled = reorient(image, prep.orientation)
    if prep.spacing_xyz_mm is not None:
        resampled = resample_to_spacing(resampled, prep.spacing_xyz_mm, sitk.sitkLinear, pixel_type=sitk.sitkFloat32)
    grid = sitk.Image(resampled.GetSize(), sitk.sitkUInt8)  # the geometry without a float copy of the pixels
    grid.CopyInformation(resampled)
    view = sitk.GetArrayViewFromImage(resampled)
    if defer_intensity and np.issubdtype(view.dtype, np.integer):
        array = np.array(view)  # a copy in the scan's own type (the scan itself may then be freed)
        mapping = intensity_map(array, prep.window, prep.normalization)
        return PreprocessedVolume(array=array, grid=grid, original=image, intensity=mapping)
    array = np.array(view, dtype=np.float32)  # one copy, whatever the type
    array = normalize_intensities(array, prep.window, prep.normalization, inplace=True)
    return PreprocessedVolume(array=array, grid=grid, original=image)


def preprocess_label(label: sitk.Image, grid: sitk.Image) -> np.ndarray:
    """A label map resampled (nearest neighbour) onto a preprocessed grid; int64 (z, y, x)."""
    out = sitk.Resample(label, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0, label.GetPixelID())
    return sitk.GetArrayFromImage(out).astype(np.int64)


def image_from_array(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    """Wrap a (z, y, x) array as an image with the reference's spacing, origin and direction."""
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    return image


def restore_label(label_zyx: np.ndarray, grid: sitk.Image, original: sitk.Image | ImageGeometry) -> sitk.Image:
    """Map a label map on the preprocessed ``grid`` back to the ``original`` image's geometry.

    Nearest-neighbour resampling in physical space: the result has exactly the original's size,
    spacing, origin and direction, and is an unsigned 8-bit (or 16-bit if needed) label image.
    ``original`` may be the image or only its :class:`ImageGeometry`. Where the grid already is the
    original's geometry (native spacing and orientation) the labels are wrapped without resampling.
    """
    dtype = np.uint8 if int(label_zyx.max(initial=0)) < 256 else np.uint16
    label = image_from_array(np.ascontiguousarray(label_zyx, dtype=dtype), grid)
    target = original if isinstance(original, ImageGeometry) else ImageGeometry.of(original)
    if ImageGeometry.of(label) == target:
        return label
    return sitk.Resample(label, target.size, sitk.Transform(), sitk.sitkNearestNeighbor, target.origin,
                         target.spacing, target.direction, 0, label.GetPixelID())


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
        return _nifti_shortfall(tmp)
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
