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
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F
from torch import Tensor

from .cards import ModelCard
from .imaging import (
    VOLUME_SUFFIXES,
    VolumeRef,
    discover_volumes,
    has_volume_suffix,
    preprocess_image,
    restore_label,
    write_image,
)

__all__ = [
    "gaussian_importance_map",
    "window_starts",
    "sliding_window_predict",
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


def sliding_window_predict(
    network: Callable[[Tensor], Tensor],
    volume: Tensor,
    roi_zyx: Sequence[int],
    overlap: float = 0.5,
    sw_batch_size: int = 4,
    sigma_scale: float = 0.125,
    progress: bool = False,
    normalize: bool = True,
) -> Tensor:
    """Blend the network's outputs over overlapping windows with Gaussian weights.

    Args:
        network: maps (B, C, *roi_zyx) to (B, K, *roi_zyx) (e.g. logits).
        volume: (N, C, z, y, x) float tensor, already preprocessed.
        roi_zyx: window size (z, y, x) in voxels.
        overlap: fraction of the window shared by neighbouring windows, in [0, 1).
        sw_batch_size: windows per forward pass.
        sigma_scale: Gaussian sigma as a fraction of the window size.
        progress: show a tqdm bar over window batches.
        normalize: divide by the summed weights (False: the weighted sum, whose argmax is the same;
            saves a volume-sized float32 map).

    Returns:
        (N, K, z, y, x) float32: the weighted average of the window outputs at every voxel.
    """
    if volume.ndim != 5:
        raise ValueError(f"volume must be (N, C, z, y, x), got shape {tuple(volume.shape)}")
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    roi = tuple(int(r) for r in roi_zyx)
    volume, crop = _pad_to_roi(volume.float(), roi)
    n_images, channels = volume.shape[:2]
    size = tuple(volume.shape[2:])
    starts = list(itertools.product(*(window_starts(s, r, overlap) for s, r in zip(size, roi, strict=True))))
    weight = gaussian_importance_map(roi, sigma_scale).to(volume.device)
    jobs = [(b, s) for b in range(n_images) for s in starts]
    batches = range(0, len(jobs), sw_batch_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="windows", unit="batch", leave=False)
    output: Tensor | None = None
    buffer = torch.empty((min(sw_batch_size, len(jobs)), channels, *roi), dtype=volume.dtype,
                         device=volume.device)
    with torch.inference_mode():
        for first in batches:
            chunk = jobs[first : first + sw_batch_size]
            for i, (b, (z, y, x)) in enumerate(chunk):
                buffer[i].copy_(volume[b, :, z : z + roi[0], y : y + roi[1], x : x + roi[2]])
            result = network(buffer[: len(chunk)])
            if output is None:
                output = torch.zeros((n_images, result.shape[1], *size), dtype=torch.float32,
                                     device=volume.device)
            for i, (b, (z, y, x)) in enumerate(chunk):
                output[b, :, z : z + roi[0], y : y + roi[1], x : x + roi[2]].addcmul_(result[i], weight)
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


def predict_label(
    network: torch.nn.Module,
    array_zyx: np.ndarray,
    roi_zyx: Sequence[int],
    overlap: float = 0.5,
    sw_batch_size: int = 4,
    progress: bool = False,
) -> np.ndarray:
    """Label map (z, y, x) uint8/uint16 of one preprocessed single-channel volume: argmax of the blend.

    Memory: the blend is kept unnormalised (the argmax is the same) and the argmax is taken a slab at
    a time straight into the compact label array, so no int64 or second float volume is allocated.
    """
    was_training = network.training
    network.eval()
    try:
        device = _model_device(network)
        volume = torch.from_numpy(np.ascontiguousarray(array_zyx, dtype=np.float32))[None, None].to(device)
        logits = sliding_window_predict(network, volume, roi_zyx, overlap, sw_batch_size, progress=progress,
                                        normalize=False)
        del volume
        classes, depth = logits.shape[1], logits.shape[2]
        label = np.empty(tuple(logits.shape[2:]), dtype=np.uint8 if classes <= 256 else np.uint16)
        slab = max(1, (1 << 22) // max(1, logits.shape[3] * logits.shape[4]))
        for z in range(0, depth, slab):
            label[z : z + slab] = logits[0, :, z : z + slab].argmax(0).cpu().numpy()
        del logits
    finally:
        network.train(was_training)
    return label


def segment_image(
    image: sitk.Image,
    network: torch.nn.Module,
    card: ModelCard,
    overlap: float = 0.5,
    sw_batch_size: int = 4,
    roi_zyx: Sequence[int] | None = None,
    progress: bool = False,
) -> sitk.Image:
    """Segment one scan: preprocess as the card says, predict, map back to the scan's exact geometry.

    The result is an integer label image with the input's size, spacing, origin and direction.
    ``roi_zyx`` defaults to the card's ``patch_size_zyx``.
    """
    prepared = preprocess_image(image, card.preprocessing)
    roi = tuple(roi_zyx) if roi_zyx is not None else tuple(card.patch_size_zyx)
    label = predict_label(network, prepared.array, roi, overlap, sw_batch_size, progress)
    return restore_label(label, prepared.grid, prepared.original)


def segment_array(
    array_zyx: np.ndarray,
    network: torch.nn.Module,
    card: ModelCard,
    spacing_xyz_mm: Sequence[float] = (1.0, 1.0, 1.0),
    origin_xyz_mm: Sequence[float] = (0.0, 0.0, 0.0),
    direction: Sequence[float] | None = None,
    overlap: float = 0.5,
    sw_batch_size: int = 4,
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


def _input_files(ref: VolumeRef) -> list[Path]:
    """The files a volume is read from (a DICOM folder's files, a detached header's data file)."""
    if ref.path.is_dir():
        return [p for p in ref.path.iterdir() if p.is_file()]
    files = [ref.path]
    if ref.path.name.lower().endswith((".mhd", ".nhdr")):
        files += [p for p in ref.path.parent.glob(ref.path.name.rsplit(".", 1)[0] + ".*") if p != ref.path]
    return files


def plan_outputs(refs: Sequence[VolumeRef], inputs: Sequence[str | Path], out: str | Path) -> list[Path]:
    """The label file of each volume, checked before any work: never an input file, never inside a
    folder given as input, and never one file for two volumes (``a/case.nrrd`` and ``b/case.nrrd``,
    ``x.nii`` and ``x.nii.gz``). Raises ImageWriteError naming the files otherwise."""
    from .errors import ImageWriteError

    out = Path(out)
    single_file = len(refs) == 1 and has_volume_suffix(out.name)
    if not single_file and has_volume_suffix(out.name):
        raise ImageWriteError(f"{out}: {len(refs)} volumes to segment need an output folder, not a file")
    if single_file:
        targets = [out]
    else:
        targets = [out / f"{name}{_output_suffix(ref)}" for ref, name in zip(refs, _output_names(refs), strict=True)]
    first: dict[str, VolumeRef] = {}
    for ref, target in zip(refs, targets, strict=True):
        key = os.path.normcase(os.path.abspath(target)).lower()
        if key in first:
            raise ImageWriteError(f"{first[key]} and {ref} would both be written to {target}; rename one or "
                                  "segment them separately (nothing was written)")
        first[key] = ref
    inputs_by_file = {os.path.realpath(f): ref for ref in refs for f in _input_files(ref)}
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
    return targets


def segment_files(
    inputs: Sequence[str | Path],
    out: str | Path,
    model: str | Path | tuple[torch.nn.Module, ModelCard],
    overlap: float = 0.5,
    sw_batch_size: int = 4,
    roi_zyx: Sequence[int] | None = None,
    preview: str | Path | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> list[Path]:
    """Segment scans on disk (NIfTI, NRRD, MHA files, DICOM series folders, or folders of them).

    ``model``: a ``(network, card)`` pair (see :func:`pgl_zoo.load_segmentation_model`), or a
    fine-tuning run folder, an exported model folder or a zoo name, loaded with that function.
    ``out``: a file (``.nii.gz``, ``.nrrd``, ``.mha``) when there is one input volume, else a folder
    that receives ``NAME.<the input's format>`` per volume (``.nii.gz`` for DICOM series). Output
    names are checked before any work (:func:`plan_outputs`): no input is ever overwritten and no
    two volumes share an output. The label image has the input's geometry exactly; NIfTI stores
    spacing and direction in float32, so a NIfTI file written for a NRRD/MHA/DICOM input carries
    them to float32 precision. Every label file is verified before it replaces anything.
    ``preview``: a PNG of three orthogonal slices with the labels overlaid (``PREVIEW_NAME.png``
    per volume when there are several). Returns the written label files.
    """
    from .errors import ImageReadError

    refs: list[VolumeRef] = []
    for item in inputs:
        found = discover_volumes(item)
        if not found:
            raise ImageReadError(f"{item}: no volume files or DICOM series found")
        refs.extend(found)
    targets = plan_outputs(refs, inputs, out)
    if isinstance(model, tuple):
        network, card = model
    else:
        from .api import load_segmentation_model

        network, card = load_segmentation_model(model, map_location=device)
    names = _output_names(refs)
    written: list[Path] = []
    for ref, name, target in zip(refs, names, targets, strict=True):
        image = ref.read()
        label = segment_image(image, network, card, overlap, sw_batch_size, roi_zyx, progress)
        written.append(write_image(label, target))
        if preview is not None:
            from .preview import write_preview

            png = Path(preview)
            if len(refs) > 1:
                png = png.with_name(f"{png.stem}_{name}.png")
            write_preview(image, label, png, card.label_names, title=name)
        if progress:
            print(f"{ref} -> {target}", flush=True)
    return written
