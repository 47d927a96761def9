"""The frame of a training run, shared by pretraining (``pretrain/trainer.py``) and fine-tuning
(``finetune/trainer.py``), in the manner of nnU-Net's ``run_training`` over hook methods.

A trainer subclasses :class:`TrainingRun` and supplies what is its own: the files a run folder of its
kind may hold (``check_out``), the options it stores in ``config.json`` (``stored_config``) and those that
may change when a run is resumed (``may_change``); its networks, data and steps stay in its module. The
frame owns, in this order:

1. ``locked()``: the ``--out`` checks, then the run lock (``runs.RunLock``, main rank only);
2. ``resume_point()``: with ``resume`` the checkpoint, whose stored options must match (one policy:
   :func:`check_resumable`);
3. ``open_folder(start)``: the checks again under the lock, ``config.json``, ``metrics.jsonl`` trimmed
   to the checkpoint the run starts from;
4. during the steps: ``append_metrics``, ``save`` (atomic checkpoints), ``warn``, ``progress_bar`` and
   ``stop_requested`` (Ctrl-C or SIGTERM through :class:`runs.StopFlag`, agreed among the ranks).

Only the main rank writes; every rank agrees on a stop. Also here: the one "output folder must be empty
(or ask for --overwrite)" check of every command that writes a folder (:func:`check_out_folder`) and the
one warm-up default and schedule (:func:`default_warmup`, :func:`warmup_cosine`).
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from .errors import OverwriteError, RunError
from .messages import warn
from .runs import (
    LOCK_NAME,
    RunLock,
    StopFlag,
    append_line,
    atomic_write_json,
    load_checkpoint,
    save_checkpoint,
    trim_jsonl,
)

__all__ = ["TrainingRun", "check_out_folder", "check_resumable", "default_warmup", "held_names",
           "resume_differences", "warmup_cosine"]

WARMUP_DIVISOR = 20  # the default warm-up: total steps // 20 (5 %)


def default_warmup(total_steps: int) -> int:
    """Linear warm-up steps when none are given: 5 % of all optimiser steps, at least 1 (both trainers)."""
    return max(1, total_steps // WARMUP_DIVISOR)


def warmup_cosine(step: int, total_steps: int, warmup_steps: int) -> float:
    """Multiplier of the base lr at ``step``: linear warm-up from 1/warmup to 1, then cosine decay to 0
    at ``total_steps`` (the one schedule of pretraining and fine-tuning)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def held_names(folder: Path, ignore: Callable[[str], bool] | None = None) -> list[str]:
    """The sorted names in ``folder`` (none when it is not a folder), the run lock and ``ignore``'s aside."""
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.name != LOCK_NAME and not (ignore and ignore(p.name)))


def check_out_folder(out: str | Path, overwrite: bool, refusal: Callable[[str], str], *,
                     not_folder: str | None = None, ignore: Callable[[str], bool] | None = None,
                     accept: Callable[[Path, list[str]], bool] | None = None,
                     order: Callable[[str], Any] | None = None) -> None:
    """The one "output folder must be empty (or ask for --overwrite)" check (both trainers, export, demo and
    ``pgl-zoo download --local-dir``).

    ``out`` may be new or an empty folder (a run lock and the names ``ignore`` says yes to aside).
    Otherwise ``overwrite`` allows it, or ``accept(out, held)`` (an earlier output of the same command,
    which it may replace; it may raise a refusal of its own). Else OverwriteError with the message
    ``refusal(held)``, ``held`` being the first three names there (sorted by ``order``; ", ..." when there
    are more). A file at ``out`` is refused with the message ``not_folder`` even with ``overwrite``;
    without ``not_folder`` it counts as a folder that is not empty.
    """
    out = Path(out)
    is_file = out.exists() and not out.is_dir()
    if is_file and not_folder is not None:
        raise OverwriteError(not_folder)
    held = [out.name] if is_file else held_names(out, ignore)
    if not held or overwrite or (not is_file and accept is not None and accept(out, held)):
        return
    held = sorted(held, key=order) if order is not None else held
    raise OverwriteError(refusal(", ".join(held[:3]) + (", ..." if len(held) > 3 else "")))


def resume_differences(stored: dict[str, Any], now: dict[str, Any], may_change: Iterable[str]) -> list[str]:
    """``"key: run X vs now Y"`` for every option that shapes the run and differs from the stored one.
    An option the stored config lacks (the run predates it) or no longer known now is not compared."""
    allowed = set(may_change)
    keys = sorted((set(stored) & set(now)) - allowed)
    return [f"{k}: run {stored[k]!r} vs now {now[k]!r}" for k in keys if _normal(stored[k]) != _normal(now[k])]


def check_resumable(stored: dict[str, Any], now: dict[str, Any], may_change: Iterable[str], where: str | Path) -> None:
    """The one resume policy: RunError naming ``where`` and every option that differs from the run's,
    except those in ``may_change``."""
    diff = resume_differences(stored, now, may_change)
    if diff:
        raise RunError(f"{where}: cannot resume with different options ({'; '.join(diff)})")


def _normal(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


class TrainingRun:
    """One run folder written by one trainer; see the module docstring for the order of the hooks.

    Subclasses set ``checkpoint_path``, ``metrics_key`` (the ``metrics.jsonl`` field a resumed run trims
    by), ``may_change`` and ``config_indent``, and define ``check_out`` and
    ``stored_config``.
    """

    config_name = "config.json"
    metrics_name = "metrics.jsonl"
    metrics_key = "step"
    config_indent = 1
    may_change: tuple[str, ...] = ()

    def __init__(self, out: str | Path, resume: bool, overwrite: bool, is_main: bool = True) -> None:
        self.out, self.resume, self.overwrite, self.is_main = Path(out), resume, overwrite, is_main

    # --- what a trainer supplies
    @property
    def checkpoint_path(self) -> Path:
        raise NotImplementedError

    def check_out(self) -> None:
        """The ``--out`` policy of this kind of run (called before the lock and again under it)."""
        raise NotImplementedError

    def stored_config(self) -> dict[str, Any]:
        """What ``config.json`` holds."""
        raise NotImplementedError

    def resume_config(self) -> dict[str, Any]:
        """The options compared with a checkpoint's ``config`` (by default ``stored_config``)."""
        return self.stored_config()

    def resume_where(self) -> str | Path:
        """What a refused resume names (by default the checkpoint)."""
        return self.checkpoint_path

    # --- the frame
    @property
    def metrics_path(self) -> Path:
        return self.out / self.metrics_name

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """The --out checks (before the lock creates the folder), then the run lock on the main rank."""
        self.check_out()
        with RunLock(self.out) if self.is_main else contextlib.nullcontext():
            yield

    def resume_point(self) -> dict[str, Any] | None:
        """With ``resume``, the checkpoint (its stored options checked against the current ones); else None
        (``check_out`` refused a folder holding one)."""
        if not self.resume:
            return None
        checkpoint = load_checkpoint(self.checkpoint_path)
        if checkpoint.get("config") is not None:
            check_resumable(checkpoint["config"], self.resume_config(), self.may_change, self.resume_where())
        return checkpoint

    def open_folder(self, start: int) -> None:
        """Main rank, before the first step: the --out checks again (under the lock), config.json, and
        metrics.jsonl trimmed to the records up to ``start`` (the checkpoint's step or epoch)."""
        if not self.is_main:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        self.check_out()
        atomic_write_json(self.out / self.config_name, self.stored_config(), indent=self.config_indent)
        trim_jsonl(self.metrics_path, self.metrics_key, start, self.warn)

    def append_metrics(self, record: dict[str, Any]) -> None:
        """One record appended to metrics.jsonl (main rank); a torn last line is dropped on resume."""
        if self.is_main:
            append_line(self.metrics_path, json.dumps(record))

    def save(self, state: dict[str, Any], path: Path | None = None) -> None:
        """A checkpoint (by default ``checkpoint_path``) written atomically by the main rank."""
        if self.is_main:
            save_checkpoint(state, path or self.checkpoint_path)

    def warn(self, message: str) -> None:
        """``warning: message`` on stderr (:func:`pgl_zoo.messages.warn`), from the main rank only."""
        if self.is_main:
            warn(message)

    def progress_bar(self, iterable: Iterable | None = None, **kwargs: Any):
        """A progress bar (:func:`pgl_zoo.progress.progress_bar`); None on the other ranks."""
        if not self.is_main:
            return None
        from .progress import progress_bar

        return progress_bar(iterable, **kwargs)

    @staticmethod
    def stopping() -> StopFlag:
        """The stop flag of the steps: the first Ctrl-C or SIGTERM asks for a stop at the next step boundary."""
        return StopFlag()

    @staticmethod
    def stop_requested(flag: StopFlag, device: Any = None, distributed: bool = False) -> bool:
        """Whether any rank was asked to stop (an all_reduce under torch.distributed), so that all ranks stop
        at the same step."""
        if not distributed:
            return flag.stop
        import torch
        import torch.distributed as dist

        t = torch.tensor([1.0 if flag.stop else 0.0], device=device)
        dist.all_reduce(t)
        return bool(t.item() > 0)
