"""Reading a scan: :func:`read_image`, the one way pgl-zoo reads an image (every format, every check).

Arrays are (z, y, x); SimpleITK sizes and spacings (x, y, z), in mm.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import ImageReadError
from .dicom import read_dicom_series
from .files import special_file_problem
from .header_checks import check_header
from .nifti_header import nifti_shortfall


def read_image(path: str | Path, series_uid: str | None = None, check_finite: bool = True) -> sitk.Image:
    """Read a 3D scalar volume: a NIfTI/NRRD/MHA/MHD file or a DICOM series folder.

    Raises ImageReadError (one line naming the file) when the file is missing, not a regular file (a
    FIFO would block the reader), unreadable, not 3D (fewer than 2 voxels along an axis),
    multi-component, or empty; when its header claims more voxels than ``max_voxels()``, a voxel
    spacing that is not > 0, or more data than the file can hold (checked before any pixel is read:
    exactly for raw NRRD, MetaImage and DICOM data, at deflate's maximum ratio for compressed data);
    when a NIfTI header's geometry is ambiguous (a pixdim of 0; qform and sform, or ITK's reading and
    either of them, more than a tenth of a voxel apart: see
    :func:`pgl_zoo.imaging.nifti_header.nifti_geometry_problem`); when a DICOM series has missing,
    unreadable or unevenly spaced slices; and, with ``check_finite``, when a voxel is NaN or infinite.
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
            image = read_dicom_series(path, series_uid)
        else:
            check_header(path, [path])
            if path.name.lower().endswith((".nii", ".nii.gz")):
                problem = nifti_shortfall(path, check_finite)
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
