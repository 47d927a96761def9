"""Reading, writing and preprocessing volumes with their geometry (SimpleITK).

Axis order: numpy/torch arrays are (z, y, x); SimpleITK sizes, spacings and origins are
(x, y, z). Spacings are in millimetres. ``sitk.GetArrayFromImage`` is the one place the two
orders meet.
"""

from __future__ import annotations

import gzip
import math
import os
import re
import stat
import struct
import sys
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .atomic import atomic_write
from .cards import Preprocessing
from .errors import ImageReadError, ImageWriteError, PglZooError

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
DETACHED_HEADER_SUFFIXES = (".nhdr", ".mhd")  # the pixel data live in another file
DEFAULT_MAX_VOXELS = 2**31  # 8 GiB as float32; PGL_ZOO_MAX_VOXELS raises or lowers it
MAX_DEFLATE_RATIO = 1032  # deflate (gzip, zlib) never expands data by more than about 1032:1


NON_HU_MIN = -500.0  # a CT whose smallest value is above this has no air in HU: not in HU (uint8, HU + 1024, ...)
LABEL_MAX_VALUES = 256  # label-like: integer values >= 0, at most this many distinct ones, ...
LABEL_MIN_FLATNESS = 0.5  # ... and piecewise constant (equal_neighbour_fraction at least this)
# ... or, with at most LABEL_FEW_VALUES distinct values, at least LABEL_MIN_FLATNESS_FEW: masks of small organs at
# a coarse grid (OpenKBP's, ~4.5 mm: 0.29-0.44) have few equal neighbours; every scan here has at most 0.23
LABEL_FEW_VALUES = 32
LABEL_MIN_FLATNESS_FEW = 0.25
LABEL_CHECK_VOXELS = 1 << 24  # larger volumes are checked on an evenly strided subsample
NIFTI_FORM_TOLERANCE = 0.1  # qform, sform and ITK's geometry may differ by a tenth of the smallest voxel spacing
UNCOMPRESSED_DICOM = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2")  # transfer syntaxes


def max_voxels() -> int:
    """The largest volume read_image accepts: ``$PGL_ZOO_MAX_VOXELS`` (a whole number such as 1000000, or
    written 1e6), default 2**31. Any other value (``abc``, ``1.5``, ``0``) raises PglZooError naming it,
    rather than falling back to the default unannounced."""
    text = os.environ.get("PGL_ZOO_MAX_VOXELS", "").strip()
    if not text:
        return DEFAULT_MAX_VOXELS
    try:
        value = int(text)
    except ValueError:
        try:
            number = float(text)
        except ValueError:
            number = math.nan
        if not math.isfinite(number) or number != int(number):
            raise PglZooError(f"PGL_ZOO_MAX_VOXELS={text!r}: not a whole number of voxels (write e.g. 1000000 or "
                              "1e6)") from None
        value = int(number)
    if value < 1:
        raise PglZooError(f"PGL_ZOO_MAX_VOXELS={text!r}: must be at least 1 voxel")
    return value


def warn_stderr(message: str) -> None:
    """The default ``warn`` of the readers: one ``warning: ...`` line on stderr."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


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


def list_dicom_series(folder: str | Path) -> list[str]:
    """Series instance UIDs of the DICOM series directly inside ``folder`` (not recursive)."""
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # ITK warns on every folder without DICOM
    try:
        return list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)) or [])
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


def _read_dicom_series(folder: Path, series_uid: str | None) -> sitk.Image:
    special = next(((p, problem) for p in sorted(folder.iterdir()) if (problem := special_file_problem(p))), None)
    if special is not None:  # GDCM opens every file of the folder: a FIFO would block it for ever
        raise ImageReadError(f"{special[0]}: {special[1]}; remove it from the DICOM folder {folder}")
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
    _check_unlisted_dicom(folder, files)
    problem = dicom_spacing_problem(files)
    if problem:
        raise ImageReadError(f"{folder}: {problem}; stacked on a uniform grid its geometry would be wrong")
    _check_header(folder, files)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    return reader.Execute()


def _check_unlisted_dicom(folder: Path, files: Sequence[str]) -> None:
    """Refuse a DICOM file of the folder that GDCM left out of every series because it cannot be read
    (a slice truncated by a copy): the series would otherwise be stacked without it, silently."""
    listed = {os.path.realpath(f) for f in files}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or not entry.is_file() or os.path.realpath(entry) in listed:
            continue
        try:
            with open(entry, "rb") as handle:
                if handle.read(132)[128:132] != b"DICM":
                    continue
        except OSError:
            continue
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(entry))
        try:
            reader.ReadImageInformation()
        except RuntimeError:
            raise ImageReadError(f"{entry}: a DICOM file of {folder} cannot be read (truncated or corrupt); the "
                                 "series would be stacked without it") from None


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


def _header_lines(path: Path, limit: int = 1 << 16) -> list[tuple[str, int]]:
    """The text lines at the start of a file and the byte offset after each (NRRD, MetaImage headers)."""
    with open(path, "rb") as handle:
        head = handle.read(limit)
    lines, position = [], 0
    for raw in head.split(b"\n"):
        position += len(raw) + 1
        if position > len(head) + 1:
            break
        lines.append((raw.decode("latin-1").rstrip("\r"), min(position, len(head))))
    return lines


METAIMAGE_REQUIRED = ("NDims", "DimSize", "ElementType", "ElementDataFile")


def _metaimage_fields(path: Path) -> tuple[dict[str, str], int]:
    """The ``Key = Value`` fields of a MetaImage header (.mha/.mhd) up to ElementDataFile, and the offset
    after that line (where the pixel data of ``ElementDataFile = LOCAL`` begin)."""
    fields: dict[str, str] = {}
    end = 0
    for line, after in _header_lines(path):
        key, sep, value = line.partition("=")
        if not sep:
            continue
        fields[key.strip()] = value.strip()
        if key.strip() == "ElementDataFile":
            end = after
            break
    return fields, end


def _check_metaimage_header(path: Path) -> None:
    """A truncated .mhd/.mha header is named as such (ITK says "No such file or directory")."""
    fields, _ = _metaimage_fields(path)
    missing = [k for k in METAIMAGE_REQUIRED if k not in fields]
    if missing:
        raise ImageReadError(f"{path}: MetaImage header is truncated or incomplete (no {', '.join(missing)})")


def _pixel_data(path: Path) -> tuple[Path, int, str] | None:
    """Where the pixels of a NRRD or MetaImage volume lie and how they are encoded: (data file, offset
    of the first pixel byte, "raw" | "deflate" | "text" | "hex"); None when unknown (NIfTI, DICOM, file
    lists, bzip2)."""
    name = path.name.lower()
    if name.endswith((".mha", ".mhd")):
        fields, end = _metaimage_fields(path)
        data = fields.get("ElementDataFile", "")
        if not data or data.upper().startswith("LIST") or "%" in data or " " in data:
            return None
        compressed = fields.get("CompressedData", "False").lower() in ("true", "1")
        encoding = "deflate" if compressed else "raw"
        if data.upper() == "LOCAL":
            return path, end, encoding
        skip = fields.get("HeaderSize", "0")
        offset = int(skip) if skip.lstrip("-").isdigit() and int(skip) > 0 else 0
        return path.parent / data, offset, encoding
    if name.endswith((".nrrd", ".nhdr")):
        fields: dict[str, str] = {}
        end = None
        for line, after in _header_lines(path):
            if not line.strip():
                end = after
                break
            key, sep, value = line.partition(":")
            if sep and not line.startswith("#"):
                fields[key.strip().lower()] = value.lstrip("=").strip()
        encoding = {"raw": "raw", "gzip": "deflate", "gz": "deflate", "ascii": "text", "text": "text",
                    "txt": "text", "hex": "hex"}.get(fields.get("encoding", "").lower())
        data = fields.get("data file") or fields.get("datafile")
        if encoding is None or (data and (data.upper().startswith("LIST") or " " in data or "%" in data)):
            return None
        skip = fields.get("byte skip", "0")
        offset = int(skip) if skip.isdigit() else 0
        if data:
            return path.parent / data, offset, encoding
        if end is None:
            return None
        return path, end + offset, encoding
    return None


def _check_header(path: Path, files: Sequence[str | Path]) -> None:
    """Refuse, before any pixel is read, a volume larger than max_voxels(), a voxel spacing that is not
    positive, and a header that claims more pixel data than its file(s) hold: exactly, for raw encodings
    (uncompressed NRRD, MetaImage, DICOM; the data file of a detached .mhd/.nhdr), and at deflate's
    maximum compression ratio for compressed ones. ``files``: the volume file, or a DICOM series' files."""
    header_file = Path(files[0])
    dicom = len(files) > 1 or path.is_dir()
    if header_file.name.lower().endswith((".mha", ".mhd")):
        _check_metaimage_header(header_file)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(header_file))
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # ITK's multi-line warnings; the checks below say it in one
    try:
        reader.ReadImageInformation()
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)
    size = list(reader.GetSize())
    if dicom:
        size = size[:2] + [len(files)]
    voxels = math.prod(max(int(n), 1) for n in size)
    shape = "x".join(map(str, size))
    if voxels > max_voxels():
        raise ImageReadError(f"{path}: header claims {shape} voxels ({voxels:,}), more than the limit "
                             f"{max_voxels():,} (set PGL_ZOO_MAX_VOXELS to change it)")
    if dicom:
        _check_dicom_sizes(path, files)
        return
    for axis, value in zip("xyzt", reader.GetSpacing(), strict=False):
        if not math.isfinite(value) or value == 0:  # (a negative NIfTI pixdim is a flip, which ITK applies)
            raise ImageReadError(f"{path}: voxel spacing along {axis} is {value:g} in the header; it must be > 0")
    if path.name.lower().endswith((".nii", ".nii.gz")):
        problem = _nifti_geometry_problem(path, reader)
        if problem:
            raise ImageReadError(f"{path}: {problem}")
    claimed = voxels * _bytes_per_voxel(reader.GetPixelID(), reader.GetNumberOfComponents())
    source = _pixel_data(header_file)
    if source is None:
        if header_file.name.lower().endswith(DETACHED_HEADER_SUFFIXES):
            return
        available = os.path.getsize(header_file)
        if claimed > available * MAX_DEFLATE_RATIO:
            raise ImageReadError(f"{path}: header claims {shape} voxels ({claimed:,} bytes) but the file has only "
                                 f"{available:,} bytes: truncated or corrupt")
        return
    data_file, offset, encoding = source
    if not data_file.is_file():
        raise ImageReadError(f"{path}: its pixel data file {data_file} is missing")
    available = max(0, os.path.getsize(data_file) - offset)
    need = {"raw": claimed, "deflate": -(-claimed // MAX_DEFLATE_RATIO), "hex": 2 * claimed,
            "text": voxels}[encoding]
    if available < need:
        where = "the file" if data_file == header_file else f"its data file {data_file.name}"
        raise ImageReadError(f"{path}: header claims {shape} voxels ({claimed:,} bytes, {encoding}) but {where} "
                             f"holds only {available:,} bytes of pixel data: truncated or corrupt")


def _dicom_transfer_syntax(path: str | Path) -> str | None:
    """The transfer syntax UID of a DICOM file's meta header (group 0002, always explicit VR little
    endian), or None when the file has none (then it is implicit VR little endian, uncompressed)."""
    with open(path, "rb") as handle:
        head = handle.read(4096)
    at = head.find(b"\x02\x00\x10\x00UI")
    if head[128:132] != b"DICM" or at < 0:
        return None
    length = struct.unpack("<H", head[at + 6 : at + 8])[0]
    return head[at + 8 : at + 8 + length].decode("ascii", "replace").strip("\0 ")


def _check_dicom_sizes(folder: Path, files: Sequence[str | Path]) -> None:
    """Each file of an uncompressed DICOM series must hold the pixel data its header claims (rows x
    columns x frames x samples x bits allocated); a compressed series as a whole, at most deflate's
    maximum ratio. Checked before any pixel is read (a 2-file series claiming 30000 x 30000 pixels)."""
    compressed_claim = compressed_size = 0
    for name in files:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(name))
        reader.ReadImageInformation()

        def tag(key: str, default: int, reader=reader) -> int:
            try:
                return int(reader.GetMetaData(key).strip() or default)
            except (RuntimeError, ValueError):
                return default

        columns, rows = reader.GetSize()[:2]
        frames = reader.GetSize()[2] if len(reader.GetSize()) > 2 else 1
        bits = tag("0028|0100", 8 * _bytes_per_voxel(reader.GetPixelID(), 1))
        claimed = rows * columns * max(frames, 1) * max(tag("0028|0002", 1), 1) * max(bits, 1) // 8
        available = os.path.getsize(name)
        syntax = _dicom_transfer_syntax(name)
        if syntax is None or syntax in UNCOMPRESSED_DICOM:
            if available < claimed:
                raise ImageReadError(f"{name}: DICOM header claims {columns}x{rows} pixels ({claimed:,} bytes) but "
                                     f"the file has only {available:,} bytes: truncated or corrupt")
        else:
            compressed_claim += claimed
            compressed_size += available
    if compressed_claim > compressed_size * MAX_DEFLATE_RATIO:
        raise ImageReadError(f"{folder}: DICOM headers claim {compressed_claim:,} bytes of pixel data but the files "
                             f"hold only {compressed_size:,} bytes: truncated or corrupt")


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


def _nifti_forms(header: bytes) -> dict | None:
    """Dims, pixdim, the qform and sform codes and their 4 x 4 matrices (RAS, mm) of a NIfTI-1/2 header."""
    for endian in "<>":
        sizeof = struct.unpack(endian + "i", header[:4])[0] if len(header) >= 4 else 0
        if sizeof == 348 and len(header) >= 348:
            dims = struct.unpack(endian + "8h", header[40:56])
            pixdim = struct.unpack(endian + "8f", header[76:108])
            qcode, scode = struct.unpack(endian + "hh", header[252:256])
            quatern = struct.unpack(endian + "6f", header[256:280])
            srows = struct.unpack(endian + "12f", header[280:328])
        elif sizeof == 540 and len(header) >= 540:
            dims = struct.unpack(endian + "8q", header[16:80])
            pixdim = struct.unpack(endian + "8d", header[104:168])
            qcode, scode = struct.unpack(endian + "ii", header[344:352])
            quatern = struct.unpack(endian + "6d", header[352:400])
            srows = struct.unpack(endian + "12d", header[400:496])
        else:
            continue
        b, c, d = quatern[:3]
        a = math.sqrt(max(0.0, 1.0 - (b * b + c * c + d * d)))
        rotation = np.array([[a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
                             [2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)],
                             [2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - c * c - b * b]])
        # as nifti1_io (which ITK uses): a spacing <= 0 counts as 1, pixdim[0] < 0 flips the third axis
        zooms = [v if v > 0 else 1.0 for v in pixdim[1:4]]
        zooms[2] *= -1.0 if pixdim[0] < 0 else 1.0
        qform = np.eye(4)
        qform[:3, :3] = rotation * np.array(zooms)
        qform[:3, 3] = quatern[3:]
        sform = np.eye(4)
        sform[:3] = np.array(srows, dtype=np.float64).reshape(3, 4)
        return {"dims": dims, "pixdim": pixdim, "qcode": qcode, "scode": scode, "qform": qform, "sform": sform}
    return None


def _itk_affine(reader: sitk.ImageFileReader) -> np.ndarray:
    """The voxel-to-world matrix (RAS, mm, as NIfTI stores it) of the geometry ITK read."""
    n = reader.GetDimension()
    direction = np.array(reader.GetDirection()).reshape(n, n)[:3, :3]
    affine = np.eye(4)
    affine[:3, :3] = direction * np.array(reader.GetSpacing()[:3])
    affine[:3, 3] = reader.GetOrigin()[:3]
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine  # ITK is LPS


def _nifti_geometry_problem(path: Path, reader: sitk.ImageFileReader) -> str | None:
    """Why the geometry of a NIfTI file is ambiguous, or None. ITK turns a voxel spacing of 0 into 1 mm,
    and where qform and sform disagree it picks one by its own rule while nibabel, FSL and others read
    the sform: a label written for such a scan lands elsewhere in those tools. So a zero (or non-finite)
    pixdim is refused, and so is a qform or sform (whichever the header codes as set) farther than a
    tenth of the smallest voxel spacing, at any corner of the volume, from the geometry ITK read."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            forms = _nifti_forms(handle.read(540))
    except (EOFError, OSError, zlib.error):
        return None  # reported by the checks that read the data
    if forms is None:
        return None
    dims = forms["dims"]
    spatial = max(0, min(int(dims[0]), 3))
    for i in range(1, spatial + 1):
        value = forms["pixdim"][i]
        if not math.isfinite(value) or value == 0:
            return (f"voxel spacing along {'xyz'[i - 1]} is {value:g} in the NIfTI header (pixdim[{i}]); ITK would "
                    "read it as 1 mm: set the real spacing in the header")
    if spatial < 3:
        return None
    corners = np.array([[i, j, k, 1.0] for i in (0, dims[1] - 1) for j in (0, dims[2] - 1) for k in (0, dims[3] - 1)]).T
    tolerance = NIFTI_FORM_TOLERANCE * min(abs(v) for v in forms["pixdim"][1:4])
    itk = _itk_affine(reader)
    coded = [(name, forms[name], forms[f"{name[0]}code"]) for name in ("qform", "sform") if forms[f"{name[0]}code"] > 0]

    def distance(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.abs((a - b) @ corners)[:3].max())

    if len(coded) == 2 and distance(forms["qform"], forms["sform"]) > tolerance:
        return (f"qform and sform disagree by {distance(forms['qform'], forms['sform']):.1f} mm (qform_code "
                f"{forms['qcode']}, sform_code {forms['scode']}): ITK reads one, nibabel and FSL the other, so "
                "labels would be misplaced in one of them; make them agree (e.g. nibabel: img.set_qform(img.affine))")
    for name, matrix, code in coded:
        gap = distance(itk, matrix)
        if not math.isfinite(gap) or gap > tolerance:
            return (f"the geometry ITK reads lies {gap:.1f} mm from the header's {name} ({name}_code {code}): its "
                    f"{name} is not a rotation with the header's voxel spacing (pixdim); fix the header")
    return None


def read_image(path: str | Path, series_uid: str | None = None, check_finite: bool = True) -> sitk.Image:
    """Read a 3D scalar volume: a NIfTI/NRRD/MHA/MHD file or a DICOM series folder.

    Raises ImageReadError (one line naming the file) when the file is missing, not a regular file (a
    FIFO would block the reader), unreadable, not 3D (fewer than 2 voxels along an axis),
    multi-component, or empty; when its header claims more voxels than ``max_voxels()``, a voxel
    spacing that is not > 0, or more data than the file can hold (checked before any pixel is read:
    exactly for raw NRRD, MetaImage and DICOM data, at deflate's maximum ratio for compressed data);
    when a NIfTI header's geometry is ambiguous (a pixdim of 0; qform and sform, or ITK's reading and
    either of them, more than a tenth of a voxel apart: see :func:`_nifti_geometry_problem`); when a
    DICOM series has missing, unreadable or unevenly spaced slices; and, with ``check_finite``, when a
    voxel is NaN or infinite.
    """
    path = Path(path)
    if not path.exists():
        kind = "dangling symbolic link" if path.is_symlink() else "no such file or folder"
        raise ImageReadError(f"{path}: {kind}")
    special = special_file_problem(path)
    if special:
        raise ImageReadError(f"{path}: {special}")
    try:
        if path.is_dir():
            image = _read_dicom_series(path, series_uid)
        else:
            _check_header(path, [path])
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
    warn = warn or warn_stderr
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


def equal_neighbour_fraction(array: np.ndarray) -> float:
    """Among pairs of adjacent voxels not both 0, the fraction with equal values (the smallest over
    the three axes). Label maps are piecewise constant (>= 0.69 on every mask in the project's data);
    images, even 8-bit ones, are noisy (<= 0.23 on every scan)."""
    a = np.asarray(array)
    fractions = []
    for axis in range(3):
        if a.shape[axis] < 2:
            continue
        x = np.moveaxis(a, axis, 0)
        p, q = x[1:], x[:-1]
        nonzero = (p != 0) | (q != 0)
        count = int(nonzero.sum())
        if count:
            fractions.append(float(((p == q) & nonzero).sum()) / count)
    return min(fractions) if fractions else 1.0


def label_map_reason(array: np.ndarray, max_voxels: int | None = LABEL_CHECK_VOXELS) -> str | None:
    """"looks like a label map (...)" when a volume read as a scan is one: integer values >= 0, at most
    LABEL_MAX_VALUES distinct, piecewise constant (:func:`equal_neighbour_fraction` >= LABEL_MIN_FLATNESS, or
    >= LABEL_MIN_FLATNESS_FEW with at most LABEL_FEW_VALUES distinct values); else None.
    The one check of pretraining (which skips such volumes) and ``segment`` (which warns).
    A volume of more than ``max_voxels`` is checked on an evenly strided subsample (None: all of it)."""
    a = np.asarray(array)
    if a.size == 0 or float(a.min()) < 0:
        return None
    if max_voxels is not None and a.size > max_voxels:  # a strided subsample keeps large scans cheap
        step = math.ceil((a.size / max_voxels) ** (1 / a.ndim))
        a = a[(slice(None, None, step),) * a.ndim]
    if not np.issubdtype(a.dtype, np.integer) and not bool(np.all(np.mod(a, 1) == 0)):
        return None
    distinct = np.unique(a).size
    if distinct > LABEL_MAX_VALUES:
        return None
    flatness = equal_neighbour_fraction(a)
    if flatness >= LABEL_MIN_FLATNESS or (distinct <= LABEL_FEW_VALUES and flatness >= LABEL_MIN_FLATNESS_FEW):
        return f"looks like a label map ({distinct} distinct integer values, piecewise constant)"
    return None


def non_hu_reason(array: np.ndarray, modality: str) -> str | None:
    """"not in HU (min .., max .., dtype)" for a CT whose smallest value is above NON_HU_MIN (no air: 8-bit
    exports, uint16 HU + 1024, windowed scans); None for HU or another modality. The one check of
    pretraining (``--non-hu``) and ``segment`` (which warns)."""
    if str(modality).upper() != "CT" or np.asarray(array).size == 0:
        return None
    lo, hi = float(np.min(array)), float(np.max(array))
    if lo > NON_HU_MIN:
        return f"not in HU (min {lo:g}, max {hi:g}, {np.asarray(array).dtype})"
    return None


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


# spacing: relative; origin: times the smallest spacing (at least 1e-4 mm); direction cosines: absolute
GEOMETRY_TOLERANCE = 1e-3


def geometry_differences(a: sitk.Image | ImageGeometry, b: sitk.Image | ImageGeometry,
                         tolerance: float = GEOMETRY_TOLERANCE) -> list[str]:
    """What differs between two grids, one phrase each ("size (..) vs (..)", "spacing ...", "origin ...",
    "direction ..."); empty when they are the same grid. The one comparison of grids in pgl-zoo: spacing
    within ``tolerance`` relative, origin within ``tolerance`` times the smallest spacing (mm, at least
    1e-4), direction cosines within ``tolerance``."""
    a, b = (g if isinstance(g, ImageGeometry) else ImageGeometry.of(g) for g in (a, b))

    def shown(values) -> str:
        return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"

    out = []
    if a.size != b.size:
        out.append(f"size {a.size} vs {b.size}")
    spacing = np.asarray(a.spacing, dtype=np.float64)
    checks = (("spacing", a.spacing, b.spacing, tolerance, 0.0),
              ("origin", a.origin, b.origin, 0.0, max(tolerance * float(spacing.min(initial=1.0)), 1e-4)),
              ("direction", a.direction, b.direction, 0.0, tolerance))
    for name, x, y, rtol, atol in checks:
        if len(x) != len(y) or not np.allclose(x, y, rtol=rtol, atol=atol):
            out.append(f"{name} {shown(x)} vs {shown(y)}")
    return out


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
