"""Sliding-window prediction with Gaussian blending, on a preprocessed volume.

Axis order: arrays and tensors are (z, y, x) (with leading (N, C) for tensors). Window sizes
(``roi_zyx``) are in voxels of the preprocessed grid.

The window placement, the Gaussian importance map and the padding of inputs smaller than the window
replicate MONAI's ``sliding_window_inference(..., mode="gaussian", sigma_scale=0.125)`` so that both
give the same output (to float rounding); this implementation preallocates the window batch, runs under
``torch.inference_mode`` and accumulates in place. How the windows slide is one
:class:`WindowSettings`; reading scans and writing labels is :mod:`pgl_zoo.inference`'s.

Example:
    >>> logits = sliding_window_predict(net, volume_ncdhw, roi_zyx=(32, 64, 64), overlap=0.5)
    >>> label = predict_label(net, array_zyx, roi_zyx=(32, 64, 64))
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .compile import compile_for_inference
from .preprocessing.intensity import IntensityMap

__all__ = [
    "WindowSettings",
    "gaussian_importance_map",
    "window_starts",
    "sliding_window_predict",
    "default_window_batch",
    "predict_label",
    "predict_label_with",
]


@dataclass(frozen=True)
class WindowSettings:
    """How windows slide over a preprocessed volume.

    ``roi_zyx``: window size (z, y, x) in voxels of the preprocessed grid (None: not chosen yet; a
    scan is then predicted with its card's ``patch_size_zyx``). ``overlap``: fraction of a window
    shared with its neighbours, in [0, 1). ``sw_batch_size``: windows per forward pass (None or 0:
    :func:`default_window_batch` of the device). ``sigma_scale``: Gaussian sigma as a fraction of the
    window size. ``progress``: a bar over window batches (:mod:`pgl_zoo.progress`). ``compile``: run
    the network through :func:`pgl_zoo.compile.compile_for_inference` first.
    """

    roi_zyx: tuple[int, ...] | None = None
    overlap: float = 0.5
    sw_batch_size: int | None = None
    sigma_scale: float = 0.125
    progress: bool = False
    compile: bool = False

    def __post_init__(self) -> None:
        if self.roi_zyx is not None:
            object.__setattr__(self, "roi_zyx", tuple(int(r) for r in self.roi_zyx))
        if not 0 <= self.overlap < 1:
            raise ValueError(f"overlap must be in [0, 1), got {self.overlap}")

    @property
    def roi(self) -> tuple[int, ...]:
        """The window size (z, y, x) in voxels; ValueError when none was chosen."""
        if self.roi_zyx is None:
            raise ValueError("no window size (roi_zyx) given")
        return self.roi_zyx

    def for_device(self, device: torch.device | str) -> WindowSettings:
        """These settings with ``sw_batch_size`` chosen: :func:`default_window_batch` of ``device`` when
        None or 0."""
        return replace(self, sw_batch_size=self.sw_batch_size or default_window_batch(device))


def gaussian_importance_map(roi_zyx: Sequence[int], sigma_scale: float = 0.125) -> Tensor:
    """Separable Gaussian weights of one window, (z, y, x) float32, clamped below like MONAI's.

    sigma along each axis is ``sigma_scale * size``; weights below ``max(min, 1e-3)`` are raised to it
    (``monai.data.utils.compute_importance_map(mode="gaussian")``).
    """
    weights: Tensor | None = None
    for i, n in enumerate(roi_zyx):
        x = torch.arange(start=-(n - 1) / 2.0, end=(n - 1) / 2.0 + 1, dtype=torch.float)
        x = torch.exp(x**2 / (-2 * (n * sigma_scale) ** 2))
        weights = x if weights is None else weights.unsqueeze(-1) * x[(None,) * i]
    assert weights is not None
    floor = max(float(weights.min()), 1e-3)
    return weights.clamp_(min=floor)


def window_starts(size: int, roi: int, overlap: float) -> list[int]:
    """Start indices of the windows along one axis (MONAI's placement; the last one ends at ``size``).

    ``size`` must be >= ``roi`` (smaller inputs are padded first).
    """
    if roi >= size:
        return [0]
    interval = max(int(roi * (1 - overlap)), 1)
    count = int(math.ceil(size / interval))
    n = next((d for d in range(count) if d * interval + roi >= size), count - 1) + 1
    return [i * interval - max(i * interval + roi - size, 0) for i in range(n)]


def _pad_to_roi(x: Tensor, roi: Sequence[int]) -> tuple[Tensor, list[slice]]:
    """Pad (half before, rest after, zeros) spatial axes shorter than the window, as MONAI does."""
    pad: list[int] = []
    crop: list[slice] = []
    for n, r in zip(x.shape[2:], roi, strict=True):
        diff = max(r - n, 0)
        crop.append(slice(diff // 2, diff // 2 + n))
    for k in range(x.ndim - 1, 1, -1):  # F.pad order: last axis first
        diff = max(roi[k - 2] - x.shape[k], 0)
        pad.extend([diff // 2, diff - diff // 2])
    if any(pad):
        x = F.pad(x, pad)
    return x, crop


def default_window_batch(device: torch.device | str = "cpu") -> int:
    """Windows per forward pass when none is given: 2 on CPU, 4 on a GPU.

    On the 2-core x86_64 CPU of ``benchmarks/inference.py`` the pgl-lungs-ct network ran fastest at 2
    windows per pass (about 1.2x the time per window of 4: larger batches of full-resolution
    16-channel maps no longer fit the cache). 4 on a GPU is a default, not a measurement.
    """
    return 2 if torch.device(device).type == "cpu" else 4


@dataclass
class _WindowGrid:
    """A volume (N, C, z, y, x) padded to at least the window, the crop (z, y, x) back to its own size,
    the padded size (z, y, x) in voxels and the window starts, in z, y, x order."""

    volume: Tensor
    crop: list[slice]
    size: tuple[int, ...]
    starts: list[tuple[int, ...]]


def _window_grid(volume: Tensor, settings: WindowSettings) -> _WindowGrid:
    """Pad ``volume`` (N, C, z, y, x) to at least the window of ``settings``; place the windows."""
    if volume.ndim != 5:
        raise ValueError(f"volume must be (N, C, z, y, x), got shape {tuple(volume.shape)}")
    roi = settings.roi
    volume, crop = _pad_to_roi(volume, roi)
    size = tuple(volume.shape[2:])
    axes = (window_starts(s, r, settings.overlap) for s, r in zip(size, roi, strict=True))
    return _WindowGrid(volume, crop, size, list(itertools.product(*axes)))


def _window_outputs(network: Callable[[Tensor], Tensor], grid: _WindowGrid, settings: WindowSettings,
                    fixed_batch: bool, intensity: IntensityMap | None = None) -> Iterator[tuple[int, tuple, Tensor]]:
    """Run the network over the windows of ``grid``, ``settings.sw_batch_size`` at a time (chosen: see
    :meth:`WindowSettings.for_device`), in order (image, then z, y, x start); yield ``(image index,
    start, output window (K, *roi))``. The window batch is one preallocated float32 buffer;
    ``intensity`` (if given) maps each batch of raw scan values to the network's input in it.
    ``fixed_batch`` feeds the whole buffer even for a last, partial batch (one input shape, so a
    compiled network never recompiles). Call it under ``torch.inference_mode``."""
    batch, roi, volume = settings.sw_batch_size, settings.roi, grid.volume
    if batch is None or batch < 1:
        raise ValueError(f"sw_batch_size must be >= 1, got {batch}")
    jobs = [(b, s) for b in range(volume.shape[0]) for s in grid.starts]
    batches = range(0, len(jobs), batch)
    if settings.progress:
        from .progress import progress_bar

        batches = progress_bar(batches, desc="windows", unit="batch", leave=False)
    buffer = torch.empty((min(batch, len(jobs)), volume.shape[1], *roi), dtype=torch.float32, device=volume.device)
    for first in batches:
        chunk = jobs[first : first + batch]
        for i, (b, (z, y, x)) in enumerate(chunk):
            buffer[i].copy_(volume[b, :, z : z + roi[0], y : y + roi[1], x : x + roi[2]])
        if intensity is not None:
            intensity.apply_(buffer[: len(chunk)])
        result = network(buffer if fixed_batch else buffer[: len(chunk)])
        for i, (b, start) in enumerate(chunk):
            yield b, start, result[i]


def sliding_window_predict(
    network: Callable[[Tensor], Tensor],
    volume: Tensor,
    roi_zyx: Sequence[int],
    overlap: float = 0.5,
    sw_batch_size: int | None = None,
    sigma_scale: float = 0.125,
    progress: bool = False,
    normalize: bool = True,
    fixed_batch: bool = False,
) -> Tensor:
    """Blend the network's outputs over overlapping windows with Gaussian weights.

    Args:
        network: maps (B, C, *roi_zyx) to (B, K, *roi_zyx) (e.g. logits).
        volume: (N, C, z, y, x) float tensor, already preprocessed.
        roi_zyx, overlap, sw_batch_size, sigma_scale, progress: how the windows slide
            (:class:`WindowSettings`): window size (z, y, x) in voxels, overlap in [0, 1), windows per
            forward pass (None: :func:`default_window_batch` of the volume's device), Gaussian sigma as a
            fraction of the window size, a progress bar over window batches.
        normalize: divide by the summed weights (False: the weighted sum, whose argmax is the same;
            saves a volume-sized float32 map).
        fixed_batch: always feed ``sw_batch_size`` windows (for a compiled network).

    Returns:
        (N, K, z, y, x) float32: the weighted average of the window outputs at every voxel. For a
        label map use :func:`predict_label`, which never holds this whole volume of class scores.
    """
    settings = WindowSettings(roi_zyx, overlap, sw_batch_size, sigma_scale, progress)
    grid = _window_grid(volume.float(), settings)
    device, roi, size = grid.volume.device, settings.roi, grid.size
    settings = settings.for_device(device)
    weight = gaussian_importance_map(roi, settings.sigma_scale).to(device)
    output: Tensor | None = None
    with torch.inference_mode():
        for b, (z, y, x), result in _window_outputs(network, grid, settings, fixed_batch):
            if output is None:
                output = torch.zeros((grid.volume.shape[0], result.shape[0], *size), dtype=torch.float32,
                                     device=device)
            output[b, :, z : z + roi[0], y : y + roi[1], x : x + roi[2]].addcmul_(result, weight)
        assert output is not None
        if normalize:
            count = torch.zeros(size, dtype=torch.float32, device=device)
            for z, y, x in grid.starts:
                count[z : z + roi[0], y : y + roi[1], x : x + roi[2]] += weight
            output.div_(count)
    if any(c.start != 0 or c.stop != s for c, s in zip(grid.crop, size, strict=True)):
        output = output[(slice(None), slice(None), *grid.crop)]
    return output


def _model_device(network: torch.nn.Module) -> torch.device:
    try:
        return next(network.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def _argmax_into(label: np.ndarray, scores: Tensor) -> None:
    """``label[...] = scores.argmax(0)`` for (K, z, y, x) scores, a few planes at a time (no int64 volume)."""
    planes = max(1, (1 << 22) // max(1, scores.shape[2] * scores.shape[3]))
    for z in range(0, scores.shape[1], planes):
        label[z : z + planes] = scores[:, z : z + planes].argmax(0).cpu().numpy()


def predict_label(
    network: torch.nn.Module,
    array_zyx: np.ndarray,
    roi_zyx: Sequence[int],
    overlap: float = 0.5,
    sw_batch_size: int | None = None,
    progress: bool = False,
    compile: bool = False,
    intensity: IntensityMap | None = None,
) -> np.ndarray:
    """Label map (z, y, x) uint8/uint16 of one preprocessed single-channel volume: argmax of the blend.

    The same labels as ``sliding_window_predict(...).argmax(1)``, computed in a stream along z:
    windows run in z order, their Gaussian-weighted scores are summed into a slab only one window
    deep, and every plane that no later window reaches is turned into labels at once. So the class
    scores never exist for the whole volume: beside the input and the 8/16-bit labels, memory holds
    K x window-depth planes of float32 (a 3-class, 32-plane window on 512 x 512 planes: 96 MiB).
    The per-voxel sums are added in the same order as in :func:`sliding_window_predict`, so the
    labels are identical to its argmax.

    ``roi_zyx`` (window size (z, y, x) in voxels), ``overlap``, ``sw_batch_size`` (None:
    :func:`default_window_batch`), ``progress`` and ``compile``: the :class:`WindowSettings`
    (:func:`predict_label_with` takes them as one). ``compile``: run the network through
    :func:`pgl_zoo.compile.compile_for_inference` (pays off from a few hundred windows on; a network
    that already went through it is used as is). ``intensity``: ``array_zyx`` holds scan values (e.g.
    int16 HU) and this map turns each window into network input as it is cut out
    (:func:`pgl_zoo.preprocessing.scan.preprocess_image` with ``defer_intensity``), so no float32 copy of the
    volume is made; the labels equal those of the normalised float32 array.
    """
    settings = WindowSettings(roi_zyx, overlap, sw_batch_size, progress=progress, compile=compile)
    return predict_label_with(network, array_zyx, settings, intensity)


def predict_label_with(network: torch.nn.Module, array_zyx: np.ndarray, settings: WindowSettings,
                       intensity: IntensityMap | None = None) -> np.ndarray:
    """:func:`predict_label` with its window settings as one :class:`WindowSettings` (``roi_zyx`` given)."""
    was_training = network.training
    network.eval()
    try:
        device = _model_device(network)
        settings = settings.for_device(device)
        volume, intensity = _input_volume(array_zyx, settings.roi, intensity, device)
        grid = _window_grid(volume, settings)
        del volume
        compiled = settings.compile and not hasattr(network, "pgl_fixed_batch")
        run = compile_for_inference(network) if compiled else network
        fixed = bool(getattr(run, "pgl_fixed_batch", False))
        weight = gaussian_importance_map(settings.roi, settings.sigma_scale).to(device)
        with torch.inference_mode():
            label = _streamed_argmax(_window_outputs(run, grid, settings, fixed, intensity),
                                     grid.size, settings.roi, weight, device)
        crop = grid.crop
        del grid
    finally:
        network.train(was_training)
    return label[tuple(crop)]


def _input_volume(array_zyx: np.ndarray, roi: tuple[int, ...], intensity: IntensityMap | None,
                  device: torch.device) -> tuple[Tensor, IntensityMap | None]:
    """``array_zyx`` (z, y, x) as a (1, 1, z, y, x) tensor on ``device``, and the intensity map still to
    apply per window. Scan values stay as they are (no float32 copy) while ``intensity`` maps each window;
    a volume smaller than the window along any axis is mapped here instead (padding belongs to the
    normalised input), and the map returned is then None. Without ``intensity`` the tensor is float32."""
    if intensity is not None and any(n < r for n, r in zip(np.shape(array_zyx), roi, strict=True)):
        # smaller than the window: padding belongs to the normalised input, and the volume is small
        array_zyx = intensity.apply_(torch.from_numpy(np.array(array_zyx, dtype=np.float32))).numpy()
        intensity = None
    dtype = None if intensity is not None else np.float32
    return torch.from_numpy(np.ascontiguousarray(array_zyx, dtype=dtype))[None, None].to(device), intensity


def _streamed_argmax(windows, size: tuple[int, ...], roi: tuple[int, ...], weight: Tensor,
                     device: torch.device) -> np.ndarray:
    """Labels (z, y, x) of the padded grid ``size`` from ``windows`` (``_window_outputs``: (image, (z, y, x)
    start, (K, *roi) output), in z order), each weighted by ``weight`` (*roi). The weighted sums are kept
    for ``roi[0]`` planes from the lowest open plane only; planes no later window reaches become labels
    as soon as a window starts above them. uint8 labels, uint16 beyond 256 classes."""
    label: np.ndarray | None = None
    scores: Tensor | None = None  # planes [low, low + roi[0]) of the weighted sums
    low = 0
    for _, (z, y, x), result in windows:
        if scores is None:
            classes = result.shape[0]
            label = np.empty(size, dtype=np.uint8 if classes <= 256 else np.uint16)
            scores = torch.zeros((classes, roi[0], size[1], size[2]), dtype=torch.float32, device=device)
        if z > low:  # planes below z are final: no later window starts below z
            done = min(z - low, roi[0])
            _argmax_into(label[low : low + done], scores[:, :done])
            for plane in range(roi[0] - done):  # shift the rest down (ascending: never overwrites a source)
                scores[:, plane].copy_(scores[:, plane + done])
            scores[:, roi[0] - done :].zero_()
            low = z
        scores[:, z - low : z - low + roi[0], y : y + roi[1], x : x + roi[2]].addcmul_(result, weight)
    assert label is not None and scores is not None
    _argmax_into(label[low:], scores[:, : size[0] - low])
    return label
