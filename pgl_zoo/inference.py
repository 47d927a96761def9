"""Sliding-window prediction with Gaussian blending, and segmenting a volume end to end.

Axis order: arrays and tensors are (z, y, x) (with leading (N, C) for tensors); SimpleITK sizes and
spacings are (x, y, z) in millimetres. Window sizes (``roi_zyx``) are in voxels of the preprocessed grid.

The window placement, the Gaussian importance map and the padding of inputs smaller than the window
replicate MONAI's ``sliding_window_inference(..., mode="gaussian", sigma_scale=0.125)`` so that both
give the same output (to float rounding); this implementation preallocates the window batch, runs under
``torch.inference_mode`` and accumulates in place.

Example:
    >>> logits = sliding_window_predict(net, volume_ncdhw, roi_zyx=(32, 64, 64), overlap=0.5)
    >>> label = segment_array(array_zyx, net, card, spacing_xyz_mm=(1.0, 1.0, 1.0))
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .cards import ModelCard
from .imaging.discover import VolumeRef, discover_volumes, warn_stderr
from .imaging.files import VOLUME_SUFFIXES, has_volume_suffix
from .imaging.geometry import ImageGeometry
from .imaging.write import write_image
from .preprocessing.intensity import IntensityMap
from .preprocessing.restore import restore_label
from .preprocessing.scan import PreprocessedVolume, preprocess_image

__all__ = [
    "gaussian_importance_map",
    "window_starts",
    "sliding_window_predict",
    "default_window_batch",
    "compile_for_inference",
    "predict_label",
    "segment_image",
    "segment_array",
    "segment_files",
]


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


class _CompiledForInference(nn.Module):
    """A network under ``torch.compile`` whose compilations run with inductor's ``freezing`` on.

    (``torch.compile(..., options={"freezing": True})`` does not reach the stage that freezes, as
    measured with torch 2.14: no speed-up; so the config is patched around every call, which is
    when compilation happens.) If the first call fails to compile (no working C++ compiler, say),
    one warning names the reason and the eager network is used from then on.
    """

    pgl_fixed_batch = True  # predict_label feeds it one input shape only

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network
        self.compiled = torch.compile(network, dynamic=False)
        self.compile_error: str | None = None
        self._first = True

    def forward(self, x: Tensor) -> Tensor:
        from torch._inductor import config as inductor_config

        if self.compile_error is not None:
            return self.network(x)
        try:
            with inductor_config.patch(freezing=True):
                return self.compiled(x)
        except Exception as error:  # noqa: BLE001 - any compiler failure: fall back, say why once
            if not self._first:
                raise
            self.compile_error = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            import warnings

            warnings.warn(f"torch.compile failed, running the network uncompiled: {self.compile_error}",
                          RuntimeWarning, stacklevel=2)
            return self.network(x)
        finally:
            self._first = False


def compile_for_inference(network: nn.Module) -> nn.Module:
    """``torch.compile`` for prediction: static shapes and inductor's freezing (weights folded in as
    constants, convolution weights prepacked for oneDNN, normalisation and activation fused).

    The first call compiles (about 25-60 s on a 2-core CPU; inductor caches the result on disk, so a
    later process compiles faster); later calls with the same input shape reuse it. Outputs match the
    eager network to float rounding (about 1e-5 on logits). Use it where many windows or many scans
    amortise the compilation: ``pgl-zoo segment --compile``. Call it under ``torch.inference_mode``
    or ``torch.no_grad`` (freezing is for inference only).

    The weights are frozen into the compiled code: build a new one after changing them. The result
    carries ``pgl_fixed_batch = True``, so :func:`predict_label` feeds it one input shape only.
    """
    return _CompiledForInference(network)


def _window_grid(volume: Tensor, roi: tuple[int, ...], overlap: float):
    """Pad ``volume`` (N, C, z, y, x) to at least the window; the window starts in z, y, x order."""
    if volume.ndim != 5:
        raise ValueError(f"volume must be (N, C, z, y, x), got shape {tuple(volume.shape)}")
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    volume, crop = _pad_to_roi(volume, roi)
    size = tuple(volume.shape[2:])
    starts = list(itertools.product(*(window_starts(s, r, overlap) for s, r in zip(size, roi, strict=True))))
    return volume, crop, size, starts


def _window_outputs(network: Callable[[Tensor], Tensor], volume: Tensor, roi: tuple[int, ...],
                    starts: list[tuple[int, int, int]], sw_batch_size: int, fixed_batch: bool, progress: bool,
                    intensity: IntensityMap | None = None):
    """Run the network over the windows, ``sw_batch_size`` at a time, in order (image, then z, y, x
    start); yield ``(image index, start, output window (K, *roi))``. The window batch is one
    preallocated float32 buffer; ``intensity`` (if given) maps each batch of raw scan values to the
    network's input in it. ``fixed_batch`` feeds the whole buffer even for a last, partial batch (one
    input shape, so a compiled network never recompiles). Call it under ``torch.inference_mode``."""
    if sw_batch_size < 1:
        raise ValueError(f"sw_batch_size must be >= 1, got {sw_batch_size}")
    jobs = [(b, s) for b in range(volume.shape[0]) for s in starts]
    batches = range(0, len(jobs), sw_batch_size)
    if progress:
        from .progress import progress_bar

        batches = progress_bar(batches, desc="windows", unit="batch", leave=False)
    buffer = torch.empty((min(sw_batch_size, len(jobs)), volume.shape[1], *roi), dtype=torch.float32,
                         device=volume.device)
    for first in batches:
        chunk = jobs[first : first + sw_batch_size]
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
        roi_zyx: window size (z, y, x) in voxels.
        overlap: fraction of the window shared by neighbouring windows, in [0, 1).
        sw_batch_size: windows per forward pass (None: :func:`default_window_batch` of the volume's device).
        sigma_scale: Gaussian sigma as a fraction of the window size.
        progress: show a progress bar over window batches (:mod:`pgl_zoo.progress`).
        normalize: divide by the summed weights (False: the weighted sum, whose argmax is the same;
            saves a volume-sized float32 map).
        fixed_batch: always feed ``sw_batch_size`` windows (for a compiled network).

    Returns:
        (N, K, z, y, x) float32: the weighted average of the window outputs at every voxel. For a
        label map use :func:`predict_label`, which never holds this whole volume of class scores.
    """
    roi = tuple(int(r) for r in roi_zyx)
    volume, crop, size, starts = _window_grid(volume.float(), roi, overlap)
    batch = sw_batch_size or default_window_batch(volume.device)
    weight = gaussian_importance_map(roi, sigma_scale).to(volume.device)
    output: Tensor | None = None
    with torch.inference_mode():
        for b, (z, y, x), result in _window_outputs(network, volume, roi, starts, batch, fixed_batch, progress):
            if output is None:
                output = torch.zeros((volume.shape[0], result.shape[0], *size), dtype=torch.float32,
                                     device=volume.device)
            output[b, :, z : z + roi[0], y : y + roi[1], x : x + roi[2]].addcmul_(result, weight)
        assert output is not None
        if normalize:
            count = torch.zeros(size, dtype=torch.float32, device=volume.device)
            for z, y, x in starts:
                count[z : z + roi[0], y : y + roi[1], x : x + roi[2]] += weight
            output.div_(count)
    if any(c.start != 0 or c.stop != s for c, s in zip(crop, size, strict=True)):
        output = output[(slice(None), slice(None), *crop)]
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

    ``sw_batch_size``: windows per forward pass (None: :func:`default_window_batch`). ``compile``:
    run the network through :func:`compile_for_inference` (pays off from a few hundred windows on;
    a network that already went through it is used as is). ``intensity``: ``array_zyx`` holds scan
    values (e.g. int16 HU) and this map turns each window into network input as it is cut out
    (:func:`pgl_zoo.imaging.preprocess_image` with ``defer_intensity``), so no float32 copy of the
    volume is made; the labels equal those of the normalised float32 array.
    """
    was_training = network.training
    network.eval()
    try:
        device = _model_device(network)
        roi = tuple(int(r) for r in roi_zyx)
        volume, intensity = _input_volume(array_zyx, roi, intensity, device)
        volume, crop, size, starts = _window_grid(volume, roi, overlap)
        batch = sw_batch_size or default_window_batch(device)
        run = compile_for_inference(network) if compile and not hasattr(network, "pgl_fixed_batch") else network
        fixed = bool(getattr(run, "pgl_fixed_batch", False))
        weight = gaussian_importance_map(roi).to(device)  # MONAI's sigma_scale 0.125, as above
        with torch.inference_mode():
            label = _streamed_argmax(_window_outputs(run, volume, roi, starts, batch, fixed, progress, intensity),
                                     size, roi, weight, device)
        del volume
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


@dataclass(frozen=True)
class _WindowSettings:
    """How a preprocessed scan is predicted (:func:`predict_label`): ``roi_zyx`` window size (z, y, x) in
    voxels (None: the card's ``patch_size_zyx``), ``overlap`` fraction of a window shared with its
    neighbours, ``sw_batch_size`` windows per forward pass (None: :func:`default_window_batch`),
    ``progress`` bar over window batches, ``compile`` the network first."""

    roi_zyx: Sequence[int] | None = None
    overlap: float = 0.5
    sw_batch_size: int | None = None
    progress: bool = False
    compile: bool = False


def segment_image(
    image: sitk.Image,
    network: torch.nn.Module,
    card: ModelCard,
    overlap: float = 0.5,
    sw_batch_size: int | None = None,
    roi_zyx: Sequence[int] | None = None,
    progress: bool = False,
    compile: bool = False,
) -> sitk.Image:
    """Segment one scan: preprocess as the card says, predict, map back to the scan's exact geometry.

    The result is an integer label image with the input's size, spacing, origin and direction.
    ``roi_zyx`` defaults to the card's ``patch_size_zyx``.
    """
    prepared = preprocess_image(image, card.preprocessing, defer_intensity=True)
    settings = _WindowSettings(roi_zyx, overlap, sw_batch_size, progress, compile)
    return _segment_prepared(prepared, network, card, settings)


def _segment_prepared(prepared: PreprocessedVolume, network: torch.nn.Module, card: ModelCard,
                      settings: _WindowSettings) -> sitk.Image:
    """Labels of a preprocessed scan on its original geometry. Takes the float32 array out of
    ``prepared``, so it is freed once the labels exist, before they are mapped back."""
    roi = tuple(settings.roi_zyx) if settings.roi_zyx is not None else tuple(card.patch_size_zyx)
    array, prepared.array = prepared.array, None
    label = predict_label(network, array, roi, overlap=settings.overlap, sw_batch_size=settings.sw_batch_size,
                          progress=settings.progress, compile=settings.compile, intensity=prepared.intensity)
    del array
    return restore_label(label, prepared.grid, prepared.original)


def segment_array(
    array_zyx: np.ndarray,
    network: torch.nn.Module,
    card: ModelCard,
    spacing_xyz_mm: Sequence[float] = (1.0, 1.0, 1.0),
    origin_xyz_mm: Sequence[float] = (0.0, 0.0, 0.0),
    direction: Sequence[float] | None = None,
    overlap: float = 0.5,
    sw_batch_size: int | None = None,
) -> np.ndarray:
    """Segment a raw (z, y, x) intensity array (scan units, e.g. HU) given its voxel geometry.

    Same as :func:`segment_image` on an image built from the array; returns a (z, y, x) label array
    of the input's shape (uint8, or uint16 with more than 255 classes).
    """
    array = np.asarray(array_zyx)
    if array.ndim != 3:
        raise ValueError(f"array must be 3D (z, y, x), got shape {array.shape}")
    image = sitk.GetImageFromArray(array.astype(np.float32, copy=False))
    image.SetSpacing(tuple(float(s) for s in spacing_xyz_mm))
    image.SetOrigin(tuple(float(o) for o in origin_xyz_mm))
    if direction is not None:
        image.SetDirection(tuple(float(d) for d in direction))
    label = segment_image(image, network, card, overlap, sw_batch_size)
    return sitk.GetArrayFromImage(label)


def _output_names(refs: Sequence[VolumeRef]) -> list[str]:
    """Unique output stems: the file name without suffix, or folder name (+ series UID if several)."""
    stems = [ref.stem for ref in refs]
    names = []
    for ref, stem in zip(refs, stems, strict=True):
        if ref.series_uid and stems.count(stem) > 1:
            stem = f"{stem}_{ref.series_uid}"
        names.append(stem)
    return names


def _output_suffix(ref: VolumeRef) -> str:
    """The input's own format (exact double-precision geometry for NRRD/MHA); NIfTI for DICOM series."""
    if ref.path.is_dir():
        return ".nii.gz"
    name = ref.path.name.lower()
    suffix = next(s for s in VOLUME_SUFFIXES if name.endswith(s))
    return {".nhdr": ".nrrd", ".mhd": ".mha", ".nii": ".nii.gz"}.get(suffix, suffix)


# --format of segment -> the name ending of each output in a folder (None: the input's own format).
OUTPUT_FORMATS = {"nifti": None, "dicom-seg": "_seg.dcm", "rtstruct": "_rtstruct.dcm"}


def check_dicom_inputs(refs: Sequence[VolumeRef], output_format: str) -> None:
    """Refuse (ImageReadError, one line naming the input) any input that is not a DICOM series when
    ``output_format`` is a DICOM object that references the scan's slices."""
    from .errors import ImageReadError

    for ref in refs:
        if not (ref.path.is_dir() and ref.series_uid):
            raise ImageReadError(f"{ref}: --format {output_format} needs a DICOM series folder as input (the "
                                 "DICOM object references the scan's own slices); segment this file with the "
                                 "default --format nifti (nothing was written)")


def preview_paths(preview: str | Path | None, names: Sequence[str]) -> list[Path]:
    """The preview PNG of each volume: ``preview`` itself for one, ``STEM_NAME.png`` each for several."""
    if preview is None:
        return []
    png = Path(preview)
    if len(names) == 1:
        return [png]
    return [png.with_name(f"{png.stem}_{name}.png") for name in names]


def plan_outputs(refs: Sequence[VolumeRef], inputs: Sequence[str | Path], out: str | Path,
                 output_format: str = "nifti", overwrite: bool = False,
                 preview: str | Path | None = None) -> list[Path]:
    """The label file of each volume, checked before any work: never an input file, never inside a
    folder given as input, and never one file for two volumes (``a/case.nrrd`` and ``b/case.nrrd``,
    ``x.nii`` and ``x.nii.gz``). Without ``overwrite`` no existing file is replaced: neither a label
    (it may be a hand-corrected contour) nor a ``preview`` PNG. Raises ImageWriteError (or
    OverwriteError) naming the files otherwise.

    ``output_format`` "dicom-seg" / "rtstruct": one volume may go to a file ``*.dcm``, else ``out``
    is a folder that receives ``NAME_seg.dcm`` / ``NAME_rtstruct.dcm`` per series."""
    from .errors import ImageWriteError, OverwriteError

    out = Path(out)
    ending = OUTPUT_FORMATS[output_format]
    if ending is None:
        is_file = has_volume_suffix(out.name)
    else:
        is_file = out.name.lower().endswith(".dcm")
        if has_volume_suffix(out.name):
            raise ImageWriteError(f"{out}: --format {output_format} writes a DICOM file; name it *.dcm, or give a "
                                  "folder (nothing was written)")
    single_file = len(refs) == 1 and is_file
    if not single_file and is_file:
        raise ImageWriteError(f"{out}: {len(refs)} volumes to segment need an output folder, not a file")
    if single_file:
        targets = [out]
    else:
        targets = [out / f"{name}{ending or _output_suffix(ref)}"
                   for ref, name in zip(refs, _output_names(refs), strict=True)]
    first: dict[str, VolumeRef] = {}
    for ref, target in zip(refs, targets, strict=True):
        key = os.path.normcase(os.path.abspath(target)).lower()
        if key in first:
            raise ImageWriteError(f"{first[key]} and {ref} would both be written to {target}; rename one or "
                                  "segment them separately (nothing was written)")
        first[key] = ref
    inputs_by_file = {os.path.realpath(f): ref for ref in refs for f in ref.files()}
    folders = [os.path.realpath(p) for p in inputs if Path(p).is_dir()]
    for target in targets:
        real = os.path.realpath(target)
        if real in inputs_by_file:
            raise ImageWriteError(f"{target}: is the input {inputs_by_file[real]}; writing the labels there would "
                                  "destroy the scan (choose another -o)")
        inside = next((f for f in folders if real.startswith(f + os.sep)), None)
        if inside is not None:
            raise ImageWriteError(f"{target}: lies in the input folder {inside}; choose an -o outside it "
                                  "(nothing was written)")
    if not overwrite:
        for target in [*targets, *preview_paths(preview, _output_names(refs))]:
            if target.exists() or target.is_symlink():
                raise OverwriteError(f"{target}: exists; pass --overwrite to replace it (nothing was written)")
    return targets


def segment_files(
    inputs: Sequence[str | Path],
    out: str | Path,
    model: str | Path | tuple[torch.nn.Module, ModelCard],
    overlap: float = 0.5,
    sw_batch_size: int | None = None,
    roi_zyx: Sequence[int] | None = None,
    preview: str | Path | None = None,
    device: str = "cpu",
    progress: bool = True,
    compile: bool = False,
    output_format: str = "nifti",
    overwrite: bool = False,
    warn: Callable[[str], None] | None = None,
) -> list[Path]:
    """Segment scans on disk (NIfTI, NRRD, MHA files, DICOM series folders, or folders of them).

    ``model``: a ``(network, card)`` pair (see :func:`pgl_zoo.load_segmentation_model`), or a
    fine-tuning run folder, an exported model folder or a zoo name, loaded with that function.
    ``out``: a file (``.nii.gz``, ``.nrrd``, ``.mha``) when there is one input volume, else a folder
    that receives ``NAME.<the input's format>`` per volume (``.nii.gz`` for DICOM series). Output
    names are checked before any work (:func:`plan_outputs`): no input is ever overwritten, no two
    volumes share an output, and an existing label or preview file is replaced only with
    ``overwrite``. The label image has the input's geometry exactly; NIfTI stores
    spacing and direction in float32, so a NIfTI file written for a NRRD/MHA/DICOM input carries
    them to float32 precision. Every label file is verified before it replaces anything.
    ``preview``: a PNG of three orthogonal slices with the labels overlaid (``PREVIEW_NAME.png``
    per volume when there are several). ``sw_batch_size``: windows per forward pass (None:
    :func:`default_window_batch`). ``compile``: compile the network once
    (:func:`compile_for_inference`) and use it for every scan. ``warn`` (default: a ``warning:`` line
    on stderr) is told of each scan that looks wrong for the model but is segmented all the same: a
    CT model given a scan not in HU (:func:`pgl_zoo.imaging.non_hu_reason`), any model given a label
    map (:func:`pgl_zoo.imaging.label_map_reason`), and of skipped special files (FIFOs) in input
    folders. Returns the written label files.

    ``output_format``: "nifti" (the label images above), "dicom-seg" (a DICOM Segmentation) or
    "rtstruct" (an RT Structure Set) that references the input series' slices
    (:mod:`pgl_zoo.dicom_output`; needs the extra ``pgl-zoo[dicom]``): every input must then be a
    DICOM series, ``out`` is a ``.dcm`` file for one series or a folder receiving ``NAME_seg.dcm`` /
    ``NAME_rtstruct.dcm``. Both are checked before the model is loaded.
    """
    from .errors import PglZooError

    warn = warn or warn_stderr
    if output_format not in OUTPUT_FORMATS:
        raise PglZooError(f"unknown output format {output_format!r}; one of {', '.join(OUTPUT_FORMATS)}")
    if not 0 <= overlap < 1:
        raise PglZooError(f"overlap must be in [0, 1), got {overlap}")
    refs = _input_volumes(inputs, output_format, warn)
    targets = plan_outputs(refs, inputs, out, output_format, overwrite=overwrite, preview=preview)
    names = _output_names(refs)
    pngs = preview_paths(preview, names) or [None] * len(refs)
    loaded = _segmentation_model(model, device, compile)
    settings = _WindowSettings(roi_zyx, overlap, sw_batch_size, progress, compile=False)  # compiled above
    written: list[Path] = []
    for ref, name, target, png in zip(refs, names, targets, pngs, strict=True):
        written.append(_segment_scan(ref, target, loaded, settings, output_format, png, name, warn))
        if progress:
            print(f"{ref} -> {target}", flush=True)
    return written


def _input_volumes(inputs: Sequence[str | Path], output_format: str, warn: Callable[[str], None]) -> list[VolumeRef]:
    """Every volume of every input (ImageReadError for an input that holds none); for a DICOM
    ``output_format``, checked to be DICOM series and the ``pgl-zoo[dicom]`` extra to be installed."""
    from .errors import ImageReadError

    refs: list[VolumeRef] = []
    for item in inputs:
        found = discover_volumes(item, warn=warn)
        if not found:
            raise ImageReadError(f"{item}: no volume files or DICOM series found")
        refs.extend(found)
    if output_format != "nifti":
        from .dicom_output import require_dicom_extra

        check_dicom_inputs(refs, output_format)
        require_dicom_extra(output_format)
    return refs


@dataclass(frozen=True)
class _SegmentationModel:
    """A network ready to segment with, its card, and the sha256 that names it in DICOM output (None:
    "unverified")."""

    network: torch.nn.Module
    card: ModelCard
    digest: str | None


def _segmentation_model(model: str | Path | tuple[torch.nn.Module, ModelCard], device: str,
                        compile: bool) -> _SegmentationModel:
    """The network (compiled once for all the scans with ``compile``) and card of ``model``, and the sha256
    that names the model in DICOM output: the loaded weights' (their load report), else the card's."""
    if isinstance(model, tuple):
        network, card = model
    else:
        from .api import load_segmentation_model

        network, card = load_segmentation_model(model, map_location=device)
    report = getattr(network, "load_report", None)  # the weights' sha256 names the model in DICOM output
    digest = getattr(report, "sha256", None) or card.sha256
    if compile:  # once for all the scans
        network = compile_for_inference(network)
    return _SegmentationModel(network, card, digest)


def _segment_scan(ref: VolumeRef, target: Path, model: _SegmentationModel, settings: _WindowSettings,
                  output_format: str, png: Path | None, title: str, warn: Callable[[str], None]) -> Path:
    """Segment one scan and write its labels to ``target`` in ``output_format``, and with ``png`` a preview
    titled ``title``; returns the label file. The scan's pixels are kept only for the preview."""
    prepared, image = _read_scan(ref, model.card, png is not None, warn)
    label = _segment_prepared(prepared, model.network, model.card, settings)
    del prepared
    if output_format == "nifti":
        written = write_image(label, target)
    else:
        written = _write_dicom(output_format, label, ref, target, model.card, model.digest)
    if image is not None:
        from .preview import write_preview

        write_preview(image, label, png, model.card.label_names, title=title)
    return written


def _read_scan(ref: VolumeRef, card: ModelCard, keep_image: bool,
               warn: Callable[[str], None]) -> tuple[PreprocessedVolume, sitk.Image | None]:
    """One scan read and preprocessed for ``card`` (intensity mapping deferred to the windows), after a
    warning when it looks wrong for the model (not in HU for a CT model, a label map). Returns the
    preprocessed volume and, with ``keep_image`` (for a preview), the scan; without it only the scan's
    geometry is kept, so its pixels are freed before prediction."""
    from .imaging.scan_checks import label_map_reason, non_hu_reason

    image = ref.read()
    raw = sitk.GetArrayViewFromImage(image)
    for problem in (non_hu_reason(raw, card.modality), label_map_reason(raw)):
        if problem is not None:
            expected = f"a {card.modality} scan" + (" in HU" if "HU" in problem else "")
            warn(f"{ref}: {problem}, but the model {card.name} expects {expected}: the labels may be meaningless")
    del raw
    prepared = preprocess_image(image, card.preprocessing, defer_intensity=True)
    if not keep_image:  # keep only the geometry: the scan's pixels are freed before prediction
        prepared.original = ImageGeometry.of(image)
        return prepared, None
    return prepared, image


def _write_dicom(output_format: str, label: sitk.Image, ref: VolumeRef, target: Path, card: ModelCard,
                 digest: str | None) -> Path:
    """A DICOM SEG or RTSTRUCT of ``label`` on the series ``ref``; the model is identified by its
    card's name and ``digest``, the sha256 of the weights loaded ("unverified" when None)."""
    from .dicom_output import write_dicom_seg, write_rtstruct

    writer = write_dicom_seg if output_format == "dicom-seg" else write_rtstruct
    return writer(label, ref.path, target, card.label_names, card.name, digest, series_uid=ref.series_uid)
