"""Checks of a volume's header before any pixel is read: size limit, voxel spacing, NIfTI geometry,
and the pixel data claimed against the bytes the file(s) hold (also for each file of a DICOM series).

Sizes and spacings here are SimpleITK's, (x, y, z); spacings in mm.
"""

from __future__ import annotations

import math
import os
import re
import struct
from collections.abc import Sequence
from pathlib import Path

import SimpleITK as sitk

from ..errors import ImageReadError, PglZooError
from .files import DETACHED_HEADER_SUFFIXES
from .nifti_header import nifti_geometry_problem
from .text_headers import check_metaimage_header, pixel_data

DEFAULT_MAX_VOXELS = 2**31  # 8 GiB as float32; PGL_ZOO_MAX_VOXELS raises or lowers it
MAX_DEFLATE_RATIO = 1032  # deflate (gzip, zlib) never expands data by more than about 1032:1
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


def _bytes_per_voxel(pixel_id: int, components: int) -> int:
    text = sitk.GetPixelIDValueAsString(pixel_id)
    bits = re.search(r"(\d+)-bit", text)
    size = int(bits.group(1)) // 8 if bits else 1
    return size * max(1, components) * (2 if "complex" in text else 1)


def check_header(path: Path, files: Sequence[str | Path]) -> None:
    """Refuse, before any pixel is read, a volume larger than max_voxels(), a voxel spacing that is not
    positive, and a header that claims more pixel data than its file(s) hold: exactly, for raw encodings
    (uncompressed NRRD, MetaImage, DICOM; the data file of a detached .mhd/.nhdr), and at deflate's
    maximum compression ratio for compressed ones. ``files``: the volume file, or a DICOM series' files."""
    header_file = Path(files[0])
    dicom = len(files) > 1 or path.is_dir()
    if header_file.name.lower().endswith((".mha", ".mhd")):
        check_metaimage_header(header_file)
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
        problem = nifti_geometry_problem(path, reader)
        if problem:
            raise ImageReadError(f"{path}: {problem}")
    claimed = voxels * _bytes_per_voxel(reader.GetPixelID(), reader.GetNumberOfComponents())
    source = pixel_data(header_file)
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
