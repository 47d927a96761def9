"""Checking a label map's values: integers 0..K-1, the one rule for fine-tuning and evaluation.

A label map holds one class id per voxel: 0 is background, ``num_classes`` K bounds the ids from above.
Arrays are (z, y, x); the checks look at values only (grids: :mod:`pgl_zoo.imaging.geometry`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import DataError

MAX_INFERRED_CLASSES = 1000  # without num_classes, a larger label value needs an explicit --num-classes


def check_label_values(array: np.ndarray, path: str | Path, num_classes: int | None) -> None:
    """Refuse (DataError naming ``path``) a label map with a negative or fractional value, or one not below
    ``num_classes``; without ``num_classes``, one that implies more than MAX_INFERRED_CLASSES classes."""
    if array.size == 0:
        return
    low, high = array.min(), array.max()
    if low < 0:
        raise DataError(f"{path}: negative label value {low:g}; labels must be integers 0..K-1")
    if np.issubdtype(array.dtype, np.floating) and not np.array_equal(array, np.floor(array)):
        bad = array[array != np.floor(array)].flat[0]
        raise DataError(f"{path}: fractional label value {bad:g}; labels must be integers 0..K-1")
    if num_classes is not None and high >= num_classes:
        raise DataError(f"{path}: label value {high:g} outside 0..{num_classes - 1}: not below --num-classes "
                        f"{num_classes}")
    if num_classes is None and high >= MAX_INFERRED_CLASSES:
        raise DataError(f"{path}: label value {high:g} implies more than {MAX_INFERRED_CLASSES} classes; "
                        "pass --num-classes if that is right")
