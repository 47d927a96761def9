"""Segmenting scans end to end: preprocess as the card says, predict, write the labels on the scan's grid.

:func:`segment_image` and :func:`segment_array` segment one scan in memory; :func:`segment_files`
segments scans on disk (what ``pgl-zoo segment`` runs). The sliding-window algorithm is
:mod:`pgl_zoo.sliding_window` (its settings one :class:`~pgl_zoo.sliding_window.WindowSettings`),
compiling the network :mod:`pgl_zoo.compile`, and where the labels go :mod:`pgl_zoo.output_plan`.

Axis order: arrays are (z, y, x); SimpleITK sizes and spacings are (x, y, z) in millimetres. Window
sizes (``roi_zyx``) are in voxels of the preprocessed grid.

Example:
    >>> label = segment_array(array_zyx, net, card, spacing_xyz_mm=(1.0, 1.0, 1.0))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from . import messages
from .cards import ModelCard
from .compile import compile_for_inference
from .imaging.discover import VolumeRef, discover_volumes
from .imaging.geometry import ImageGeometry
from .imaging.write import write_image
from .output_plan import OUTPUT_FORMATS, check_dicom_inputs, output_names, plan_outputs, preview_paths
from .preprocessing.restore import restore_label
from .preprocessing.scan import PreprocessedVolume, preprocess_image
from .sliding_window import WindowSettings, predict_label_with

__all__ = [
    "segment_image",
    "segment_array",
    "segment_files",
]


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
    ``overlap``, ``sw_batch_size``, ``roi_zyx``, ``progress`` and ``compile`` are the
    :class:`~pgl_zoo.sliding_window.WindowSettings`; ``roi_zyx`` defaults to the card's ``patch_size_zyx``.
    """
    settings = WindowSettings(roi_zyx, overlap, sw_batch_size, progress=progress, compile=compile)
    prepared = preprocess_image(image, card.preprocessing, defer_intensity=True)
    return _segment_prepared(prepared, network, card, settings)


def _segment_prepared(prepared: PreprocessedVolume, network: torch.nn.Module, card: ModelCard,
                      settings: WindowSettings) -> sitk.Image:
    """Labels of a preprocessed scan on its original geometry, the window the card's ``patch_size_zyx``
    unless ``settings`` name one. Takes the float32 array out of ``prepared``, so it is freed once the
    labels exist, before they are mapped back."""
    if settings.roi_zyx is None:
        settings = replace(settings, roi_zyx=tuple(card.patch_size_zyx))
    array, prepared.array = prepared.array, None
    label = predict_label_with(network, array, settings, prepared.intensity)
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
    label = segment_image(image, network, card, overlap=overlap, sw_batch_size=sw_batch_size)
    return sitk.GetArrayFromImage(label)


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
    names are checked before any work (:func:`pgl_zoo.output_plan.plan_outputs`): no input is ever overwritten, no two
    volumes share an output, and an existing label or preview file is replaced only with
    ``overwrite``. The label image has the input's geometry exactly; NIfTI stores
    spacing and direction in float32, so a NIfTI file written for a NRRD/MHA/DICOM input carries
    them to float32 precision. Every label file is verified before it replaces anything.
    ``preview``: a PNG of three orthogonal slices with the labels overlaid (``PREVIEW_NAME.png``
    per volume when there are several). ``sw_batch_size``: windows per forward pass (None:
    :func:`pgl_zoo.sliding_window.default_window_batch`). ``compile``: compile the network once
    (:func:`pgl_zoo.compile.compile_for_inference`) and use it for every scan. ``warn`` (default: a ``warning:`` line
    on stderr) is told of each scan that looks wrong for the model but is segmented all the same: a
    CT model given a scan not in HU (:func:`pgl_zoo.imaging.scan_checks.non_hu_reason`), any model given a label
    map (:func:`pgl_zoo.imaging.scan_checks.label_map_reason`), and of skipped special files (FIFOs) in input
    folders. Returns the written label files.

    ``output_format``: "nifti" (the label images above), "dicom-seg" (a DICOM Segmentation) or
    "rtstruct" (an RT Structure Set) that references the input series' slices
    (:mod:`pgl_zoo.dicom_output`; needs the extra ``pgl-zoo[dicom]``): every input must then be a
    DICOM series, ``out`` is a ``.dcm`` file for one series or a folder receiving ``NAME_seg.dcm`` /
    ``NAME_rtstruct.dcm``. Both are checked before the model is loaded.
    """
    from .errors import PglZooError

    warn = warn or messages.warn
    if output_format not in OUTPUT_FORMATS:
        raise PglZooError(f"unknown output format {output_format!r}; one of {', '.join(OUTPUT_FORMATS)}")
    if not 0 <= overlap < 1:
        raise PglZooError(f"overlap must be in [0, 1), got {overlap}")
    refs = _input_volumes(inputs, output_format, warn)
    targets = plan_outputs(refs, inputs, out, output_format, overwrite=overwrite, preview=preview)
    names = output_names(refs)
    pngs = preview_paths(preview, names) or [None] * len(refs)
    settings = WindowSettings(roi_zyx, overlap, sw_batch_size, progress=progress)  # compiled below, once
    loaded = _segmentation_model(model, device, compile)
    written: list[Path] = []
    for ref, name, target, png in zip(refs, names, targets, pngs, strict=True):
        written.append(_segment_scan(ref, target, loaded, settings, output_format, png, name, warn))
        if progress:
            messages.say(f"{ref} -> {target}")
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


def _segment_scan(ref: VolumeRef, target: Path, model: _SegmentationModel, settings: WindowSettings,
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
