"""Options of a fine-tuning run (shared by the Python function and ``pgl-zoo finetune``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..cards import NATIVE, NO_WINDOW, Preprocessing
from ..errors import PglZooError
from ..options import OptionError, in_range, spacing, voxel_sizes, window
from ..registry import default_encoder
from ..training import default_warmup
from .data import CaseArrays, CaseFiles

# What a pretrained start takes from the zoo file: the encoder only, or encoder and (when the file has
# one, as PGL files do: the local loss trains decoder levels) the decoder too. The head is always new.
INITS = ("encoder+decoder", "encoder")
# Options that may differ when a run is resumed; any other difference is refused (it would change the run).
RESUMABLE_OVERRIDES = ("out", "epochs", "resume", "progress", "device", "name", "modality", "on_epoch_end", "extra",
                       "overlap", "sw_batch_size", "overwrite", "label_names")


@dataclass
class FinetuneConfig:
    """Everything :func:`pgl_zoo.finetune.finetune` needs. Sizes are (z, y, x) voxels, spacings (x, y, z) mm.

    Data: ``data`` (an MSD / nnU-Net folder or a CSV of image,label) or ``cases`` (explicit pairs).
    ``train_cases`` / ``val_cases`` pick cases by name (the fixed split of a study); otherwise
    ``val_fraction`` of the cases (at least one) are held out by a shuffle seeded with ``split_seed``,
    independent of ``seed`` so that runs with different seeds share the split.

    Network: ``encoder`` is a zoo name or a folder with card.json (pretrained; default
    :func:`pgl_zoo.registry.default_encoder`, now "pgl-ct"), or None to train from scratch on
    the ``arch`` of the zoo entry or card ``arch_from`` (default: the default encoder's, so that a from-scratch run
    is the baseline of the default fine-tuning).
    ``init``: "encoder+decoder" (default; the decoder too when the file has one) or "encoder".
    ``cases`` may hold :class:`CaseArrays` objects (preprocessed arrays) instead of files.

    Preprocessing overrides of the encoder card's: ``spacing_xyz_mm`` (a triple, or "native"),
    ``window`` (a (low, high) pair, or "none"), ``normalization`` ("zscore", "minmax", "none").
    ``on_epoch_end`` is called with each epoch's metrics record (after the checkpoints are written).
    ``modality`` (e.g. "MRI") replaces the card's in the exported card.
    The preprocessing actually used is stored in the exported card so that ``segment`` repeats it.

    Partial labels: ``labelled_classes`` (a JSON file, or its parsed content) says which classes each case
    has contoured (:mod:`pgl_zoo.partial_labels`); training then uses the marginal loss and validation
    scores a class only on the cases that contour it. Every case must be listed.

    Schedule: ``epochs`` of ``steps_per_epoch`` optimiser steps on batches of ``batch_size``
    random patches (``foreground_probability`` of them centred on a labelled voxel of a class drawn
    uniformly among the case's classes); AdamW with a
    linear warm-up over ``warmup_steps`` (default: 5 % of all steps, as in pretraining) then cosine
    decay to 0. ``freeze_encoder`` trains the frozen-encoder linear probe instead of a U-Net
    (:mod:`pgl_zoo.nets.probe`; the encoder never changes; with ``encoder=None`` the random-encoder
    probe); ``freeze_encoder_epochs`` keeps a U-Net's encoder fixed for the first epochs;
    ``layer_decay`` < 1 scales the lr of encoder stage ``i`` (0-based) of ``n`` by
    ``layer_decay ** (n - i)`` and of the stem by ``layer_decay ** (n + 1)``; decoder and head keep ``lr``.

    Run folder: ``out`` must be empty or new (``overwrite`` allows other files in it); ``resume``
    continues the checkpoint in it and refuses options that differ from the run's (only ``epochs``,
    ``device``, ``progress``, ``name``, ``modality``, ``overlap`` and ``sw_batch_size`` may change).
    """

    out: str | Path
    num_classes: int
    data: str | Path | None = None
    cases: Sequence[CaseFiles | CaseArrays] | None = None
    train_cases: Sequence[str] | None = None
    val_cases: Sequence[str] | None = None
    val_fraction: float = 0.2
    split_seed: int = 0
    encoder: str | Path | None = field(default_factory=default_encoder)
    arch_from: str | Path | None = None
    init: str = "encoder+decoder"
    label_names: dict[str, str] | None = None
    labelled_classes: str | Path | dict[str, Any] | None = None
    spacing_xyz_mm: tuple[float, float, float] | str | None = None
    window: tuple[float, float] | str | None = None
    normalization: str | None = None
    patch_size_zyx: tuple[int, int, int] | None = None
    epochs: int = 50
    steps_per_epoch: int = 50
    batch_size: int = 2
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int | None = None
    freeze_encoder_epochs: int = 0
    freeze_encoder: bool = False
    layer_decay: float = 1.0
    foreground_probability: float = 0.33
    overlap: float = 0.5
    sw_batch_size: int | None = None  # validation windows per pass; None: sliding_window.default_window_batch
    seed: int = 0
    resume: bool = False
    overwrite: bool = False
    progress: bool = True
    device: str = "cpu"
    name: str | None = None
    modality: str | None = None
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.data is None) == (self.cases is None):
            raise PglZooError("give exactly one of data (a folder or CSV) and cases (explicit pairs)")
        if self.num_classes < 2:
            raise PglZooError(f"num_classes must be at least 2 (background + one class), got {self.num_classes}")
        if self.epochs < 1 or self.steps_per_epoch < 1 or self.batch_size < 1:
            raise PglZooError("epochs, steps_per_epoch and batch_size must be positive")
        if not 0 < self.layer_decay <= 1:
            raise PglZooError(f"layer_decay must be in (0, 1], got {self.layer_decay}")
        if isinstance(self.encoder, str) and self.encoder.strip().lower() in ("", "none", "scratch"):
            self.encoder = None
        if self.init not in INITS:
            raise PglZooError(f"init must be one of {', '.join(INITS)}, got {self.init!r}")
        try:  # the checks of the command line's options (pgl_zoo.options), for the Python API too
            if self.patch_size_zyx is not None:
                self.patch_size_zyx = voxel_sizes(self.patch_size_zyx, "--patch-size")
            if self.spacing_xyz_mm is not None and self.spacing_xyz_mm != NATIVE:
                self.spacing_xyz_mm = spacing(self.spacing_xyz_mm, "--spacing")
            if self.window is not None and self.window != NO_WINDOW:
                self.window = window(self.window, "--window")
            in_range(self.foreground_probability, "--foreground-probability", 0, 1)
            in_range(self.overlap, "--overlap", 0, 1, high_open=True)
            in_range(self.warmup_steps, "--warmup-steps", 0)
            in_range(self.freeze_encoder_epochs, "--freeze-encoder-epochs", 0)
        except OptionError as exc:
            raise PglZooError(str(exc)) from None

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    @property
    def resolved_warmup(self) -> int:
        """``warmup_steps``, or the default of both trainers (:func:`pgl_zoo.training.default_warmup`)."""
        return self.warmup_steps if self.warmup_steps is not None else default_warmup(self.total_steps)

    def to_json(self) -> str:
        data = asdict(self)
        data.pop("on_epoch_end")
        data["cases"] = [{"name": c.name, "in_memory": True} if isinstance(c, CaseArrays)
                         else {k: str(v) for k, v in asdict(c).items()} for c in self.cases] if self.cases else None
        return json.dumps(data, indent=2, default=str) + "\n"


def resolve_preprocessing(base: Preprocessing, config: FinetuneConfig) -> Preprocessing:
    """The card's preprocessing with the config's overrides applied (:meth:`Preprocessing.with_overrides`)."""
    return base.with_overrides(config.spacing_xyz_mm, config.window, config.normalization)
