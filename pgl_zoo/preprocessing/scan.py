"""A scan (and its label map) preprocessed as a card says: reoriented, resampled, intensities mapped.

Arrays are (z, y, x); SimpleITK spacings (x, y, z), in mm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from ..cards import Preprocessing
from ..imaging.geometry import ImageGeometry
from .grid import reorient, resample_to_spacing
from .intensity import IntensityMap, intensity_map, normalize_intensities


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
