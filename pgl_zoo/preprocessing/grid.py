"""Onto the model's grid: reorientation and resampling (SimpleITK).

Spacings are SimpleITK's (x, y, z), in mm; orientations ITK codes such as "LPS".
"""

from __future__ import annotations

import SimpleITK as sitk


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
