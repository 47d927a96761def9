"""Where an image's voxels lie, and the one comparison of two grids.

SimpleITK order: size, spacing (mm), origin (mm) are (x, y, z); direction is the row-major 3 x 3
matrix of direction cosines. Arrays wrapped by :func:`image_from_array` are (z, y, x).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk


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


def image_from_array(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    """Wrap a (z, y, x) array as an image with the reference's spacing, origin and direction."""
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    return image
