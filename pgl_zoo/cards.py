"""Model cards: everything needed to use a set of weights, as plain data.

This module imports neither torch nor numpy, so that listing models is instant.

Conventions used by every card:

* ``spacing_xyz_mm`` is in millimetres and in SimpleITK order (x, y, z).
* ``patch_size_zyx`` is in voxels and in array order (z, y, x), like every array in pgl-zoo.
* ``orientation`` is an ITK orientation code as understood by ``SimpleITK.DICOMOrient``; "LPS"
  means the identity direction matrix: array axis x points to the patient's left, y posterior,
  z superior.
* ``window`` is the intensity range (in the scan's units, Hounsfield units for CT) that
  intensities are clipped to before normalisation.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

NOT_PUBLISHED = "not yet published"
PUBLISHED = "published"
BUNDLED = "bundled"
STATUSES = (NOT_PUBLISHED, PUBLISHED, BUNDLED)

NORMALIZATIONS = ("zscore", "minmax", "none")
NATIVE = "native"  # spacing override: keep each scan's own spacing
NO_WINDOW = "none"  # window override: clip nothing
# ModelCard.architecture: which network is built on ``arch`` (the layer sizes, pgl_zoo.arch): nnU-Net's
# ResidualEncoderUNet, or the frozen-encoder linear probe (pgl_zoo.nets.probe) that `pgl-zoo finetune
# --freeze-encoder` trains. The JSON key keeps its name (published and bundled cards carry it); in code,
# "arch" is always the block of sizes and "architecture" always this choice of network (fine-tuning's
# --arch names the zoo entry whose ``arch`` a from-scratch run takes: FinetuneConfig.arch_from).
UNET = "nnunet-resenc-unet3d"
LINEAR_PROBE = "nnunet-resenc-linear-probe"
ARCHITECTURES = (UNET, LINEAR_PROBE)
# A file name a card may give its weights: no folder, no glob character, not hidden.
PLAIN_FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}")

# Version 2: ``arch`` is nnU-Net's architecture block for ResidualEncoderUNet (pgl-zoo >= 0.2).
# Version 1 cards (``arch`` = widths/blocks/strides of the hand-written networks of 0.1) describe
# weights that do not fit the nnU-Net networks; they are refused with a message that says so.
CARD_SCHEMA_VERSION = 2

PGL_CITATION = (
    "@article{xie2020pgl,\n"
    "  title={PGL: Prior-Guided Local Self-supervised Learning for 3D Medical Image Segmentation},\n"
    "  author={Xie, Yutong and Zhang, Jianpeng and Liao, Zehui and Xia, Yong and Shen, Chunhua},\n"
    "  journal={arXiv preprint arXiv:2011.12640},\n"
    "  year={2020}\n"
    "}"
)


@dataclass(frozen=True)
class Preprocessing:
    """How a scan is turned into network input.

    Attributes:
        spacing_xyz_mm: target voxel spacing (x, y, z) in mm; None keeps the scan's own spacing.
        orientation: ITK orientation code the volume is reoriented to (see module docstring).
        window: (low, high) intensity clip in scan units (HU for CT); None clips nothing.
        normalization: "zscore" (after clipping, subtract the volume's mean and divide by its
            standard deviation), "minmax" (map the window linearly to [0, 1]) or "none".
    """

    spacing_xyz_mm: tuple[float, float, float] | None = None
    orientation: str = "LPS"
    window: tuple[float, float] | None = None
    normalization: str = "zscore"

    def __post_init__(self) -> None:
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {self.normalization!r}")
        if self.normalization == "minmax" and self.window is None:
            raise ValueError("normalization 'minmax' needs a window")
        if self.spacing_xyz_mm is not None:
            object.__setattr__(self, "spacing_xyz_mm", tuple(float(s) for s in self.spacing_xyz_mm))
        if self.window is not None:
            object.__setattr__(self, "window", tuple(float(w) for w in self.window))

    def with_overrides(self, spacing_xyz_mm: Any = None, window: Any = None,
                       normalization: str | None = None) -> Preprocessing:
        """This preprocessing with a run's overrides: None keeps the card's value; ``spacing_xyz_mm`` is
        (x, y, z) mm or NATIVE ("native": each scan's own spacing), ``window`` (low, high) in scan units or
        NO_WINDOW ("none": no clipping). The one place a card's preprocessing is overridden (fine-tuning,
        pretraining, export). An impossible result (minmax without a window) raises PglZooError."""
        from .errors import PglZooError

        changes: dict[str, Any] = {}
        if spacing_xyz_mm is not None:
            changes["spacing_xyz_mm"] = None if spacing_xyz_mm == NATIVE else tuple(spacing_xyz_mm)
        if window is not None:
            changes["window"] = None if window == NO_WINDOW else tuple(window)
        if normalization:
            changes["normalization"] = normalization
        try:
            return replace(self, **changes)
        except ValueError as exc:
            raise PglZooError(f"invalid preprocessing: {exc}") from None


@dataclass(frozen=True)
class ModelCard:
    """Metadata of one zoo entry (weights file + the architecture and preprocessing it expects).

    ``arch`` is nnU-Net's architecture block for ``ResidualEncoderUNet`` (``network_class_name``,
    ``arch_kwargs``, ``_kw_requires_import``; see :mod:`pgl_zoo.arch`), exactly as it appears
    in an nnU-Net plans file. ``in_channels`` is the number of input channels the weights take.
    ``contents`` says which parts of the segmentation network the file holds
    ("encoder", "decoder", "head"); keys in the file are named as in :class:`pgl_zoo.nets.UNet3d`
    (see :mod:`pgl_zoo.nets.keys`). Unknown keys are refused when a card is read, so that a
    misspelt field (``sha265``) cannot silently drop a check.

    ``size_bytes`` (optional) is the size of the weights file, so that ``pgl-zoo list`` can show it
    before a download. ``evaluation`` (optional) records a measured result of the weights: its
    ``summary`` is one line naming the metric, the value and the data it was measured on (e.g.
    ``"lungs Dice 0.95 (3 held-out LCTSC cases)"``); other keys may say how it was measured (script,
    cases, per-class values). No evaluation means "not measured", never "good".
    """

    name: str
    summary: str
    status: str
    arch: dict[str, Any]
    modality: str
    preprocessing: Preprocessing
    patch_size_zyx: tuple[int, int, int]
    architecture: str = UNET
    in_channels: int = 1
    contents: tuple[str, ...] = ("encoder",)
    task: str = "encoder"
    num_classes: int | None = None
    label_names: dict[str, str] | None = None
    sha256: str | None = None
    size_bytes: int | None = None
    hub_repo_id: str | None = None
    revision: str | None = None
    filename: str = "model.safetensors"
    license: str = "Apache-2.0"
    citation: str = PGL_CITATION
    training: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] | None = None
    notes: str = ""
    schema_version: int = CARD_SCHEMA_VERSION

    def __post_init__(self) -> None:
        from .arch import validate_arch

        if self.schema_version != CARD_SCHEMA_VERSION:
            raise ValueError(f"card schema_version {self.schema_version} is not supported (this pgl-zoo reads "
                             f"{CARD_SCHEMA_VERSION})")
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")
        object.__setattr__(self, "arch", validate_arch(self.arch))
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {self.architecture!r}")
        if self.architecture == LINEAR_PROBE and "decoder" in self.contents:
            raise ValueError("a linear-probe model has no decoder (contents: encoder, head)")
        if not self.contents or not set(self.contents) <= {"encoder", "decoder", "head"}:
            raise ValueError(f"contents must name parts among encoder, decoder, head, got {self.contents!r}")
        if isinstance(self.in_channels, bool) or not isinstance(self.in_channels, int) or self.in_channels < 1:
            raise ValueError(f"in_channels must be a positive integer, got {self.in_channels!r}")
        if not isinstance(self.filename, str) or not PLAIN_FILE_NAME.fullmatch(self.filename):
            raise ValueError("filename must be a plain file name inside the model's folder (letters, digits, '_', "
                             f"'-', '.'; no path, no pattern), got {self.filename!r}")
        if self.size_bytes is not None and (
            isinstance(self.size_bytes, bool) or not isinstance(self.size_bytes, int) or self.size_bytes < 1
        ):
            raise ValueError(f"size_bytes must be a positive integer, got {self.size_bytes!r}")
        if self.evaluation is not None:
            summary = self.evaluation.get("summary") if isinstance(self.evaluation, dict) else None
            if not isinstance(summary, str) or not summary.strip() or "\n" in summary:
                raise ValueError("evaluation must be a dict whose 'summary' is one line stating the measured result, "
                                 f"got {self.evaluation!r}")

    @property
    def evaluation_summary(self) -> str:
        """The one-line measured result, or "not measured"."""
        return self.evaluation["summary"] if self.evaluation else "not measured"

    @property
    def has_weights(self) -> bool:
        return self.status in (PUBLISHED, BUNDLED)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["preprocessing"] = asdict(self.preprocessing)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        """A card from its JSON form; refuses unknown keys, other schema versions and malformed fields."""
        data = dict(data)
        version = data.get("schema_version", 1)
        if version != CARD_SCHEMA_VERSION:
            hint = (" (a card of pgl-zoo 0.1, whose hand-written networks were replaced by nnU-Net's: its weights "
                    "do not fit; retrain or re-export with pgl-zoo >= 0.2)" if version == 1 else "")
            raise ValueError(f"card schema_version {version} is not supported, this pgl-zoo reads "
                             f"{CARD_SCHEMA_VERSION}{hint}")
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown card keys {sorted(unknown)}")
        prep = data.get("preprocessing") or {}
        if not isinstance(prep, Preprocessing):
            unknown = set(prep) - {f.name for f in fields(Preprocessing)}
            if unknown:
                raise ValueError(f"unknown preprocessing keys {sorted(unknown)}")
            prep = Preprocessing(**prep)
        data["preprocessing"] = prep
        data["patch_size_zyx"] = tuple(int(v) for v in data["patch_size_zyx"])
        data["contents"] = tuple(data.get("contents", ("encoder",)))
        return cls(**data)

    @classmethod
    def from_json_file(cls, path: str | Path) -> ModelCard:
        from .errors import PglZooError

        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:  # RecursionError: deep nesting
            raise PglZooError(f"{path}: not a valid pgl-zoo card ({type(exc).__name__}: {exc})") from exc

    def replace(self, **changes: Any) -> ModelCard:
        return replace(self, **changes)
