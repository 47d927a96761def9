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
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

NOT_PUBLISHED = "not yet published"
PUBLISHED = "published"
BUNDLED = "bundled"
STATUSES = (NOT_PUBLISHED, PUBLISHED, BUNDLED)

NORMALIZATIONS = ("zscore", "minmax", "none")

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


@dataclass(frozen=True)
class ModelCard:
    """Metadata of one zoo entry (weights file + the architecture and preprocessing it expects).

    ``arch`` holds the keyword arguments of :class:`pgl_zoo.nets.ResidualEncoder3d`
    (``in_channels``, ``widths``, ``blocks``, ``strides`` as (z, y, x) per stage).
    ``contents`` says which parts of the segmentation network the file holds
    ("encoder", "decoder", "head"); keys in the file are named as in :class:`pgl_zoo.nets.UNet3d`.
    """

    name: str
    summary: str
    status: str
    arch: dict[str, Any]
    modality: str
    preprocessing: Preprocessing
    patch_size_zyx: tuple[int, int, int]
    architecture: str = "resenc-unet3d"
    contents: tuple[str, ...] = ("encoder",)
    task: str = "encoder"
    num_classes: int | None = None
    label_names: dict[str, str] | None = None
    sha256: str | None = None
    hub_repo_id: str | None = None
    revision: str | None = None
    filename: str = "model.safetensors"
    license: str = "Apache-2.0"
    citation: str = PGL_CITATION
    training: dict[str, Any] = field(default_factory=dict)
    notes: str = ""

    @property
    def in_channels(self) -> int:
        return int(self.arch.get("in_channels", 1))

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
        known = {f.name for f in fields(cls)}
        data = {k: v for k, v in data.items() if k in known}
        prep = data.get("preprocessing") or {}
        data["preprocessing"] = prep if isinstance(prep, Preprocessing) else Preprocessing(**prep)
        data["patch_size_zyx"] = tuple(int(v) for v in data["patch_size_zyx"])
        data["contents"] = tuple(data.get("contents", ("encoder",)))
        arch = dict(data["arch"])
        for key in ("widths", "blocks"):
            if key in arch:
                arch[key] = [int(v) for v in arch[key]]
        if "strides" in arch:
            arch["strides"] = [[int(v) for v in s] for s in arch["strides"]]
        data["arch"] = arch
        return cls(**data)

    @classmethod
    def from_json_file(cls, path: str | Path) -> ModelCard:
        from .errors import PglZooError

        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise PglZooError(f"{path}: not a valid pgl-zoo card ({type(exc).__name__}: {exc})") from exc

    def replace(self, **changes: Any) -> ModelCard:
        return replace(self, **changes)
