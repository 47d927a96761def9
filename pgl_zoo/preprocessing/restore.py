"""Restoring results to the original scan's grid: a label map on the model's grid, back onto the scan's."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from ..imaging.geometry import ImageGeometry, image_from_array


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
