"""The options of a pretraining run, shared by the Python API and ``pgl-zoo pretrain``.

Values quoted (second-hand) for the paper: crop scale 1.1-1.4, overlap >= 10 %, flips p 0.5,
intensity augmentation, LARS lr 0.2 at batch 128 (``--optimizer lars``), patch 16x96x96 and
window [-1024, 325] HU (card ``pgl-ct``). Project defaults (the paper is silent or the CPU scale
differs): AdamW lr 1e-3, weight decay 0.01, 5 % warm-up, gradient clipping at norm 1, EMA momentum
0.996 -> 1 (BYOL), local weight 1, local loss on the coarsest decoder level, card ``pgl-ct-tiny``;
views (transfer study v2): crop scale 0.75-1.5 per view and overlap fraction 0.3-0.8, realised exactly.
"""

from __future__ import annotations

import os
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..cards import NORMALIZATIONS
from ..errors import PglZooError
from ..options import OptionError, in_range, spacing, voxel_sizes, window
from ..training import default_warmup
from .view_defaults import OVERLAP_RANGE, SCALE_RANGE

LOCAL_CONTROLS = ("none", "shuffled")

# Options that may differ between a run and its resumption; all others must match the checkpoint.
RESUMABLE_OVERRIDES = ("out", "steps", "stop_after", "workers", "jobs", "checkpoint_every", "device", "compile",
                       "resume", "cache_dir", "data", "log_every", "overwrite")


def default_workers() -> int:
    """Data-loading processes per rank: the CPU count divided among local ranks, at most 8, at least 1."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, min(8, (os.cpu_count() or 1) // local))


@dataclass
class PretrainConfig:
    """Every option of a run (see ``pgl-zoo pretrain --help`` for each one's meaning)."""

    data: list[str] = field(default_factory=list)
    out: str = "runs/pgl"
    model: str = "pgl-ct-tiny"
    patch_size: tuple[int, int, int] | None = None  # (z, y, x) voxels; None: the card's
    spacing: tuple[float, float, float] | None = None  # (x, y, z) mm; None: the card's
    window: tuple[float, float] | None = None  # scan units (HU); None: the card's
    normalization: str | None = None  # "zscore", "minmax" or "none" (after the window); None: the card's
    batch_size: int = 4  # per rank
    steps: int = 1000
    lr: float = 1e-3
    weight_decay: float = 0.01
    optimizer: str = "adamw"
    warmup_steps: int | None = None  # None: 5 % of steps (training.default_warmup)
    clip_grad: float = 1.0
    base_momentum: float = 0.996
    local_weight: float = 1.0
    local_levels: tuple[int, ...] | None = None  # decoder levels; None: the coarsest one
    scale_range: tuple[float, float] = SCALE_RANGE  # crop size / patch size, per view
    overlap_range: tuple[float, float] = OVERLAP_RANGE  # overlap fraction of the two crops
    local_control: str = "none"  # none | shuffled (the control run: local loss on shuffled positions)
    rotate: bool = False
    non_hu: str = "skip"
    workers: int | None = None
    jobs: int | None = None  # processes per rank preparing uncached volumes; None: as many as workers
    seed: int = 0
    checkpoint_every: int = 500
    stop_after: int | None = None  # stop (with a checkpoint) after this many steps in this invocation
    resume: bool = False
    overwrite: bool = False  # allow an --out folder holding other files (see pgl-zoo pretrain --help)
    amp: str = "auto"  # auto (bf16 on CUDA), bf16, off
    compile: bool = False
    cache_dir: str | None = None
    device: str = "auto"
    log_every: int | None = None  # metrics, loss check and progress-bar loss every N steps; None: 1 on CPU, 10 on CUDA

    def __post_init__(self) -> None:
        if isinstance(self.data, str):
            self.data = [self.data]
        self.data = [str(d) for d in self.data]
        for name in ("patch_size", "spacing", "window", "scale_range", "overlap_range", "local_levels"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, tuple(value))
        problems = []
        if self.batch_size < 2:
            problems.append("--batch-size must be >= 2 (the global heads use batch norm)")
        if self.steps < 1:
            problems.append("--steps must be >= 1")
        if not 0 < self.scale_range[0] <= self.scale_range[1]:
            problems.append(f"--crop-scale must be 0 < lo <= hi, got {self.scale_range}")
        if not 0 < self.overlap_range[0] <= self.overlap_range[1] <= 1:
            problems.append(f"--overlap must be 0 < lo <= hi <= 1, got {self.overlap_range}")
        if self.local_control not in LOCAL_CONTROLS:
            problems.append(f"--local-control must be one of {', '.join(LOCAL_CONTROLS)}, got {self.local_control!r}")
        if self.local_weight < 0:
            problems.append("--local-weight must be >= 0")
        if self.amp not in ("auto", "bf16", "off"):
            problems.append(f"--amp must be auto, bf16 or off, got {self.amp!r}")
        if self.normalization is not None and self.normalization not in NORMALIZATIONS:
            problems.append(f"--normalization must be one of {', '.join(NORMALIZATIONS)}, got {self.normalization!r}")
        if self.optimizer not in ("adamw", "lars"):
            problems.append(f"--optimizer must be adamw or lars, got {self.optimizer!r}")
        checks = [  # the command line's checks (pgl_zoo.options), for the Python API and a stored config too
            ("patch_size", lambda v: voxel_sizes(v, "--patch-size", minimum=2)),
            ("spacing", lambda v: spacing(v, "--spacing")),
            ("window", lambda v: window(v, "--window")),
        ]
        for name, check in checks:
            try:
                if getattr(self, name) is not None:
                    setattr(self, name, check(getattr(self, name)))
            except OptionError as exc:
                problems.append(str(exc))
        ranges = ((self.warmup_steps, "--warmup", 0, None), (self.clip_grad, "--clip-grad", 0, None),
                  (self.checkpoint_every, "--checkpoint-every", 0, None), (self.base_momentum, "--momentum", 0, 1),
                  (self.log_every, "--log-every", 1, None))
        for value, option, low, high in ranges:
            try:
                in_range(value, option, low, high)
            except OptionError as exc:
                problems.append(str(exc))
        if problems:
            raise PglZooError("; ".join(problems))

    @property
    def resolved_warmup(self) -> int:
        return self.warmup_steps if self.warmup_steps is not None else default_warmup(self.steps)

    def resolved_log_every(self, device_type: str) -> int:
        """``log_every``, or its default for the device: 1 on the CPU (every step logged, as before), 10 on
        CUDA (each logged step waits for the GPU's queued work; see ``pgl-zoo pretrain --help``)."""
        if self.log_every is not None:
            return self.log_every
        return 10 if device_type == "cuda" else 1

    @property
    def resolved_workers(self) -> int:
        return default_workers() if self.workers is None else self.workers

    @property
    def resolved_jobs(self) -> int:
        return default_workers() if self.jobs is None else max(1, self.jobs)

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | Path | None = None) -> PretrainConfig:
        """The config of ``data`` (unknown keys ignored). Each value must have its field's type (a number
        where a number belongs, ...) and pass the options' checks; otherwise PglZooError names the key, and
        ``source`` (the config.json it came from) when given."""
        hints = typing.get_type_hints(cls)
        known = {f.name for f in fields(cls)}
        where = f"{source}: " if source is not None else ""
        for key, value in data.items():
            if key in known and not _has_type(value, hints[key]) and not (key == "data" and isinstance(value, str)):
                raise PglZooError(f"{where}{key} must be {_describe(hints[key])}, got {value!r}")
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except PglZooError as exc:
            raise PglZooError(f"{where}{exc}") from None


def _has_type(value: Any, hint: Any) -> bool:
    """Whether a JSON value fits a field's annotation (int, float, str, bool, None, list/tuple of them)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_has_type(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(_has_type(v, a) for v, a in zip(value, args, strict=True))
        return all(_has_type(v, args[0]) for v in value) if args else True
    return True


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if hint is type(None):
        return "null"
    plural = {bool: "true/false values", int: "whole numbers", float: "numbers", str: "strings"}
    if origin in (list, tuple):
        if origin is tuple and args and args[-1] is not Ellipsis:
            return f"a list of {len(args)} {plural.get(args[0], 'values')}"
        return f"a list of {plural.get(args[0], 'values')}" if args else "a list"
    return {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}.get(hint, str(hint))
