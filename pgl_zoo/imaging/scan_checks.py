"""Checks of a scan's values after reading: is it a label map, is a CT in Hounsfield units?

Pretraining skips such volumes; ``segment`` warns. Arrays are (z, y, x).
"""

from __future__ import annotations

import math

import numpy as np

NON_HU_MIN = -500.0  # a CT whose smallest value is above this has no air in HU: not in HU (uint8, HU + 1024, ...)
LABEL_MAX_VALUES = 256  # label-like: integer values >= 0, at most this many distinct ones, ...
LABEL_MIN_FLATNESS = 0.5  # ... and piecewise constant (equal_neighbour_fraction at least this)
# ... or, with at most LABEL_FEW_VALUES distinct values, at least LABEL_MIN_FLATNESS_FEW: masks of small organs at
# a coarse grid (OpenKBP's, ~4.5 mm: 0.29-0.44) have few equal neighbours; every scan here has at most 0.23
LABEL_FEW_VALUES = 32
LABEL_MIN_FLATNESS_FEW = 0.25
LABEL_CHECK_VOXELS = 1 << 24  # larger volumes are checked on an evenly strided subsample


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
