"""The intensity part of preprocessing: clip to a window (scan units, e.g. HU), then normalise."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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
