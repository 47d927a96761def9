"""The raw NIfTI-1/2 header, parsed with ``struct``: the checks ITK does not make.

ITK reads a truncated NIfTI file without an error, turns NaN voxels into 0, reads a voxel spacing of 0
as 1 mm, and where qform and sform disagree picks one by its own rule. These functions look at the
header's bytes (and, streamed, the voxel bytes) to say so. Matrices are voxel index (i, j, k) to
world RAS in mm, as NIfTI stores them.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk

NIFTI_FORM_TOLERANCE = 0.1  # qform, sform and ITK's geometry may differ by a tenth of the smallest voxel spacing


def nifti_shortfall(path: Path, check_finite: bool = False) -> str | None:
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


# NIfTI-1 (header size 348) and NIfTI-2 (540): the struct codes of dim, pixdim and the q/sform codes, and the
# byte offsets of dim, pixdim, qform_code (sform_code follows), quatern_b.. (6 values) and srow_x.. (12 values).
_LAYOUTS = {
    348: ("h", "f", "h", {"dims": 40, "pixdim": 76, "codes": 252, "quatern": 256, "srows": 280}),
    540: ("q", "d", "i", {"dims": 16, "pixdim": 104, "codes": 344, "quatern": 352, "srows": 400}),
}


def _nifti_forms(header: bytes) -> dict | None:
    """Dims, pixdim, the qform and sform codes and their 4 x 4 matrices (RAS, mm) of a NIfTI-1/2 header."""
    for endian in "<>":
        sizeof = struct.unpack(endian + "i", header[:4])[0] if len(header) >= 4 else 0
        if sizeof not in _LAYOUTS or len(header) < sizeof:
            continue
        ints, floats, codes, at = _LAYOUTS[sizeof]
        dims = struct.unpack_from(endian + "8" + ints, header, at["dims"])
        pixdim = struct.unpack_from(endian + "8" + floats, header, at["pixdim"])
        qcode, scode = struct.unpack_from(endian + "2" + codes, header, at["codes"])
        quatern = struct.unpack_from(endian + "6" + floats, header, at["quatern"])
        srows = struct.unpack_from(endian + "12" + floats, header, at["srows"])
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


def nifti_geometry_problem(path: Path, reader: sitk.ImageFileReader) -> str | None:
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
