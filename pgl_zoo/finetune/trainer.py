"""Supervised fine-tuning of a pgl_unet3d: ``finetune(FinetuneConfig) -> FinetuneResult``.

A run folder holds ``config.json``, ``metrics.jsonl`` (one JSON object per epoch),
``checkpoints/last.pt`` (everything needed by ``resume``) and ``checkpoints/best.pt``, and at the
end ``model/``: the best network exported like a zoo entry (safetensors + card.json + README.md),
which ``pgl-zoo segment --model RUN`` loads.

Training is deterministic on CPU given ``seed`` (patches, initialisation and order all derive from it).

Example:
    >>> from pgl_zoo.finetune import FinetuneConfig, finetune
    >>> result = finetune(FinetuneConfig(data="Task04_Hippocampus", out="runs/hip", num_classes=3,
    ...                                  encoder="pgl-ct-tiny", spacing_xyz_mm="native", window="none"))
    >>> result.best_dice
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..cards import LINEAR_PROBE
from ..errors import DataError, RunError
from ..messages import say
from ..metrics import dice_per_class, nanmean
from ..nets import LinearProbe3d, build_probe
from ..partial_labels import LabelledClasses, labelled_classes_from, read_labelled_classes
from ..registry import default_encoder
from ..runs import LOCK_NAME, StopFlag, load_state, rng_state, set_rng_state
from ..sliding_window import predict_label
from ..training import TrainingRun, check_out_folder, warmup_cosine
from .config import RESUMABLE_OVERRIDES, FinetuneConfig, resolve_preprocessing
from .data import CaseArrays, CaseFiles, find_cases, load_cases, read_label_names, sample_patch
from .export import export_segmentation_model
from .losses import DiceCELoss
from .param_groups import layer_decay_groups

__all__ = ["FinetuneResult", "finetune", "split_cases"]


@dataclass
class FinetuneResult:
    """Outcome of a run. Dice values are per foreground class name, averaged over validation cases."""

    run_dir: Path
    model_dir: Path
    best_epoch: int
    best_dice: dict[str, float]
    best_mean_dice: float
    final_dice: dict[str, float]
    final_mean_dice: float
    history: list[dict[str, Any]] = field(default_factory=list)


def split_cases(pairs: list[CaseFiles], config: FinetuneConfig) -> tuple[list[CaseFiles], list[CaseFiles]]:
    """(train, validation) pairs: by the names in the config, or a seeded ``val_fraction`` hold-out."""
    by_name = {p.name: p for p in pairs}
    for names in (config.train_cases, config.val_cases):
        unknown = [n for n in names or () if n not in by_name]
        if unknown:
            raise DataError(f"cases not in the data set: {', '.join(unknown[:5])}")
    if config.val_cases is not None:
        val = [by_name[n] for n in config.val_cases]
    else:
        order = np.random.default_rng(config.split_seed).permutation(len(pairs))
        count = max(1, int(round(config.val_fraction * len(pairs))))
        val = [pairs[i] for i in sorted(order[:count])]
    val_names = {p.name for p in val}
    if config.train_cases is not None:
        train = [by_name[n] for n in config.train_cases]
    else:
        train = [p for p in pairs if p.name not in val_names]
    overlap = val_names & {p.name for p in train}
    if overlap:
        raise DataError(f"cases both in training and validation: {', '.join(sorted(overlap)[:5])}")
    if not train:
        raise DataError(f"no training cases left after holding out {len(val)} for validation")
    return train, val


def _build_network(config: FinetuneConfig) -> torch.nn.Module:
    from ..api import load_pgl_encoder, pgl_unet3d
    from ..resolve import model_card

    if config.freeze_encoder:  # the linear probe on a frozen (pretrained or random) encoder
        if config.encoder is None:
            card = model_card(str(config.arch_from or default_encoder()))
            net = build_probe(card.arch, config.num_classes)
        else:
            encoder = load_pgl_encoder(str(config.encoder))
            card = encoder.card
            net = LinearProbe3d(encoder, config.num_classes)
        net.card = card.replace(architecture=LINEAR_PROBE)
        net.freeze_encoder(True)
        return net
    if config.encoder is None:
        return pgl_unet3d(config.num_classes, encoder=str(config.arch_from or default_encoder()),
                          pretrained=False)
    return pgl_unet3d(config.num_classes, encoder=str(config.encoder), pretrained=True,
                      load_decoder=config.init == "encoder+decoder")


def _param_groups(net: torch.nn.Module, config: FinetuneConfig) -> list[dict[str, Any]]:
    """Decoder and head at ``lr``; encoder stage i of n at ``lr * layer_decay ** (n - i)``, stem at
    ``lr * layer_decay ** (n + 1)`` (see :func:`pgl_zoo.finetune.param_groups.layer_decay_groups`)."""
    return layer_decay_groups(net, config.lr, config.layer_decay)


def _validate(net: torch.nn.Module, cases: list[CaseArrays], config: FinetuneConfig, patch: tuple[int, ...],
              class_names: dict[int, str], labelled: LabelledClasses | None) -> dict[str, float]:
    """Mean Dice per class over the validation cases (with partial labels: over the cases contouring it)."""
    per_class: dict[int, list[float]] = {c: [] for c in range(1, config.num_classes)}
    for case in cases:
        label = predict_label(net, case.image, patch, config.overlap, config.sw_batch_size)
        contoured = labelled.of(case.name) if labelled is not None else range(config.num_classes)
        for c, value in dice_per_class(label, case.label, config.num_classes).items():
            if c in contoured:
                per_class[c].append(value)
    return {class_names[c]: nanmean(values) for c, values in per_class.items()}


def _labelled_classes(config: FinetuneConfig, cases: list[CaseArrays]) -> LabelledClasses | None:
    """The run's partial labels (None: every case fully contoured), checked against every case's label map."""
    if config.labelled_classes is None:
        return None
    names = {str(c): n for c, n in _class_names(config).items()}
    if isinstance(config.labelled_classes, dict):
        labelled = labelled_classes_from(config.labelled_classes, names, config.num_classes)
    else:
        labelled = read_labelled_classes(config.labelled_classes, names, config.num_classes)
    labelled.check_cases(case.name for case in cases)
    for case in cases:
        labelled.check_label(case.name, case.label)
    return labelled


RUN_FILES = ("config.json", "metrics.jsonl", "checkpoints", "model", LOCK_NAME)


def _check_out(run_dir: Path, config: FinetuneConfig) -> None:
    """Refuse to start in a folder that holds a run (without resume) or other files (without overwrite),
    and to resume where there is no checkpoint."""
    last = run_dir / "checkpoints" / "last.pt"
    is_run = (run_dir / "config.json").is_file() and ((run_dir / "metrics.jsonl").exists() or last.exists())
    if config.resume:
        if not last.is_file():
            raise RunError(f"{last}: no checkpoint to resume from; start the run without resume (--resume)")
        return
    if is_run:
        raise RunError(f"{run_dir}: already holds a run; pass resume (--resume) or choose another --out")
    check_out_folder(run_dir, config.overwrite, lambda held: f"{run_dir}: is not empty and not a run ({held}); "
                     "choose an empty --out or pass --overwrite", not_folder=f"{run_dir}: is a file, not a run folder",
                     order=lambda name: (name in RUN_FILES, name))


class FinetuneRun(TrainingRun):
    """The run folder of a fine-tuning run (:class:`pgl_zoo.training.TrainingRun`): ``checkpoints/last.pt``
    (and ``best.pt``), ``config.json`` (the options as ``FinetuneConfig.to_json`` writes them),
    ``metrics.jsonl`` trimmed by ``epoch``; the --out policy :func:`_check_out`; a resumed run may change
    :data:`pgl_zoo.finetune.config.RESUMABLE_OVERRIDES` only."""

    metrics_key = "epoch"
    config_indent = 2
    may_change = RESUMABLE_OVERRIDES

    def __init__(self, config: FinetuneConfig) -> None:
        super().__init__(config.out, config.resume, config.overwrite)
        self.config = config

    @property
    def checkpoint_path(self) -> Path:
        return self.out / "checkpoints" / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.out / "checkpoints" / "best.pt"

    def check_out(self) -> None:
        _check_out(self.out, self.config)

    def stored_config(self) -> dict[str, Any]:
        return json.loads(self.config.to_json())


def _class_names(config: FinetuneConfig) -> dict[int, str]:
    names = dict(config.label_names or {})
    return {c: names.get(str(c), f"class_{c}") for c in range(config.num_classes)}


def finetune(config: FinetuneConfig) -> FinetuneResult:
    """Fine-tune (or train from scratch) a segmentation network; see :class:`FinetuneConfig`."""
    run = FinetuneRun(config)
    with run.locked():
        return _finetune(config, run)


@dataclass
class _Progress:
    """What a checkpoint carries besides the network and optimiser: the resume point and the best epoch."""

    start_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_mean: float = -1.0
    best_epoch: int = 0
    best_dice: dict[str, float] = field(default_factory=dict)


def _restore(state: dict[str, Any], last_path: Path, net: torch.nn.Module, optimizer: torch.optim.Optimizer,
             rng: np.random.Generator) -> _Progress:
    """Network, optimiser, RNG states and progress from the checkpoint ``state`` (read and checked against
    the options by :meth:`FinetuneRun.resume_point`)."""
    load_state(net, state["model"], f"{last_path}")
    optimizer.load_state_dict(state["optimizer"])
    set_rng_state(state["rng"] if "rng" in state else {"torch": state["torch_rng"]})
    rng.bit_generator.state = state["numpy_rng"]
    return _Progress(int(state["epoch"]), list(state["history"]), float(state["best_mean"]),
                     int(state["best_epoch"]), state["best_dice"])


@dataclass
class _Epochs:
    """What the epochs of a run work on: its folder, network, optimiser (each group's ``base_lr`` scaled by
    the schedule), loss, seeded generator, patch size (z, y, x), cases, class names and partial labels."""

    run: FinetuneRun
    net: torch.nn.Module
    optimizer: torch.optim.Optimizer
    loss_fn: torch.nn.Module
    rng: np.random.Generator
    patch: tuple[int, ...]
    train_cases: list[CaseArrays]
    val_cases: list[CaseArrays]
    class_names: dict[int, str]
    labelled: LabelledClasses | None

    def train(self, epoch: int, flag: StopFlag) -> list[float]:
        """One epoch of ``steps_per_epoch`` optimiser steps on random patches; returns the step losses.
        A non-finite loss stops the run (RunError) before the step is taken; a stop asked for (Ctrl-C,
        SIGTERM) raises KeyboardInterrupt between steps, the last epoch's checkpoints kept."""
        config, net = self.run.config, self.net
        net.freeze_encoder(config.freeze_encoder or epoch < config.freeze_encoder_epochs)
        net.train()
        losses: list[float] = []
        steps = range(config.steps_per_epoch)
        bar = self.run.progress_bar(steps, desc=f"epoch {epoch + 1}/{config.epochs}", unit="step", leave=False) \
            if config.progress else None
        for i in bar if bar is not None else steps:
            if flag.stop:
                raise KeyboardInterrupt
            value = self._step(epoch, i)
            losses.append(value)
            if bar is not None:
                bar.set_postfix(loss=f"{value:.3f}")
        return losses

    def _step(self, epoch: int, i: int) -> float:
        """Step ``i`` of ``epoch``: the scheduled lr, a batch of patches (N, 1, z, y, x), the loss (with
        partial labels: the marginal loss), one optimiser step; returns the loss."""
        config, cases, rng = self.run.config, self.train_cases, self.rng
        factor = warmup_cosine(epoch * config.steps_per_epoch + i, config.total_steps, config.resolved_warmup)
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor
        picks = rng.integers(len(cases), size=config.batch_size)
        patches = [sample_patch(cases[j], self.patch, rng, config.foreground_probability) for j in picks]
        images = torch.from_numpy(np.stack([p[0] for p in patches])[:, None]).to(config.device)
        labels = torch.from_numpy(np.stack([p[1] for p in patches])).to(config.device)
        contoured = None if self.labelled is None else torch.from_numpy(
            np.stack([self.labelled.mask(cases[j].name) for j in picks])).to(config.device)
        loss = self.loss_fn(self.net(images), labels, contoured)
        value = loss.item()
        if not math.isfinite(value):
            raise RunError(f"{self.run.out}: the loss became {value} at epoch {epoch + 1}, step {i + 1}; stopped "
                           "(checkpoints of the last good epoch kept); check the data or lower --lr")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return value

    def epoch(self, epoch: int, progress: _Progress, flag: StopFlag) -> None:
        """Train and validate one epoch; its record into metrics.jsonl, then best.pt (when it is the best)
        and last.pt; a stop asked for during the epoch is honoured after them (KeyboardInterrupt)."""
        config, run = self.run.config, self.run
        started = time.perf_counter()
        losses = self.train(epoch, flag)
        dice = _validate(self.net, self.val_cases, config, self.patch, self.class_names, self.labelled)
        mean = nanmean(list(dice.values()))
        record = {"epoch": epoch + 1, "step": (epoch + 1) * config.steps_per_epoch,
                  "train_loss": float(np.mean(losses)), "lr": self.optimizer.param_groups[-1]["lr"],
                  "val_dice": dice, "val_mean_dice": mean, "seconds": round(time.perf_counter() - started, 3)}
        progress.history.append(record)
        run.append_metrics(record)
        if config.progress:
            say(f"epoch {epoch + 1}/{config.epochs}: loss {record['train_loss']:.4f}, val Dice "
                + ", ".join(f"{k} {v:.3f}" for k, v in dice.items()) + f", mean {mean:.3f}")
        if not math.isnan(mean) and mean > progress.best_mean:
            progress.best_mean, progress.best_epoch, progress.best_dice = mean, epoch + 1, dice
            run.save({"model": self.net.state_dict(), "epoch": epoch + 1, "val_dice": dice}, run.best_path)
        run.save({"model": self.net.state_dict(), "optimizer": self.optimizer.state_dict(), "epoch": epoch + 1,
                  "history": progress.history, "best_mean": progress.best_mean, "best_epoch": progress.best_epoch,
                  "best_dice": progress.best_dice, "rng": rng_state(), "numpy_rng": self.rng.bit_generator.state,
                  "config": run.stored_config()})
        if config.on_epoch_end is not None:
            config.on_epoch_end(record)
        if flag.stop:
            raise KeyboardInterrupt


def _finetune(config: FinetuneConfig, run: FinetuneRun) -> FinetuneResult:
    """Under the run lock: the checkpoint to resume (checked first), the cases, network and optimiser, the
    run folder, the epochs, then the best network exported."""
    checkpoint = run.resume_point()
    if config.label_names is None and config.data is not None:
        config.label_names = read_label_names(config.data)
    pairs = list(config.cases) if config.cases is not None else find_cases(config.data)
    train_pairs, val_pairs = split_cases(pairs, config)

    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    net = _build_network(config).to(config.device)
    base_card = net.card
    prep = resolve_preprocessing(base_card.preprocessing, config)
    patch = tuple(int(p) for p in (config.patch_size_zyx or base_card.patch_size_zyx))
    train_cases = load_cases(train_pairs, prep, config.num_classes)
    val_cases = load_cases(val_pairs, prep, config.num_classes)
    class_names = _class_names(config)
    labelled = _labelled_classes(config, train_cases + val_cases)

    optimizer = torch.optim.AdamW(_param_groups(net, config), lr=config.lr, weight_decay=config.weight_decay)
    for group in optimizer.param_groups:
        group["base_lr"] = group["lr"]
    epochs = _Epochs(run, net, optimizer, DiceCELoss(), rng, patch, train_cases, val_cases, class_names, labelled)
    progress = _restore(checkpoint, run.checkpoint_path, net, optimizer, rng) if checkpoint is not None \
        else _Progress()
    run.open_folder(progress.start_epoch)
    with run.stopping() as flag:
        for epoch in range(progress.start_epoch, config.epochs):
            epochs.epoch(epoch, progress, flag)
    return _export_best(config, run.out, net, base_card, prep, patch, class_names, pairs, train_pairs, val_pairs,
                        progress)


def _export_best(config: FinetuneConfig, run_dir: Path, net: torch.nn.Module, base_card, prep, patch,
                 class_names: dict[int, str], pairs: list[CaseFiles], train_pairs: list[CaseFiles],
                 val_pairs: list[CaseFiles], run: _Progress) -> FinetuneResult:
    """Export the best epoch's network (the last one when no epoch had a finite Dice) to ``RUN/model``."""
    best_path = run_dir / "checkpoints" / "best.pt"
    best_state = torch.load(best_path, map_location="cpu", weights_only=True)["model"] if best_path.exists() \
        else net.state_dict()
    card = base_card.replace(
        name=config.name or f"{run_dir.name}",
        summary=(f"Linear probe on the frozen encoder {config.encoder or '(random)'}" if config.freeze_encoder else
                 f"Segmentation network fine-tuned from {config.encoder or 'scratch'}")
                + f" ({config.num_classes} classes).",
        preprocessing=prep,
        modality=config.modality or base_card.modality,
        patch_size_zyx=patch,
        label_names={str(c): n for c, n in class_names.items()},
        notes=f"Fine-tuned by pgl-zoo finetune from {config.encoder or 'random initialisation'}; see training.",
        training={
            "method": "supervised fine-tuning (Dice + cross-entropy"
                      + (", marginal over uncontoured classes)" if config.labelled_classes is not None else ")"),
            "initialisation": str(config.encoder) if config.encoder is not None else "random (from scratch)",
            "data": str(config.data) if config.data is not None else f"{len(pairs)} explicit cases",
            "train_cases": [p.name for p in train_pairs], "val_cases": [p.name for p in val_pairs],
            "epochs": config.epochs, "steps_per_epoch": config.steps_per_epoch, "batch_size": config.batch_size,
            "lr": config.lr, "seed": config.seed, "best_epoch": run.best_epoch, "val_dice": run.best_dice,
        },
    )
    model_dir = export_segmentation_model(best_state, card, config.num_classes, run_dir / "model")
    final = run.history[-1] if run.history else {"val_dice": {}, "val_mean_dice": float("nan")}
    return FinetuneResult(run_dir=run_dir, model_dir=model_dir, best_epoch=run.best_epoch, best_dice=run.best_dice,
                          best_mean_dice=run.best_mean, final_dice=final["val_dice"],
                          final_mean_dice=final["val_mean_dice"], history=run.history)
