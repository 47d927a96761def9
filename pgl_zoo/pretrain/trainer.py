"""The PGL pretraining loop: data -> views -> online/target networks -> losses -> step -> EMA.

Writes into the run folder (rank 0 only): ``config.json``, ``checkpoint.pt`` (atomic; every
``checkpoint_every`` steps, at the end and on Ctrl-C), ``metrics.jsonl`` (one JSON object per
logged step: every ``log_every`` steps and the last), ``summary.json`` and ``loss.png`` (when matplotlib
is installed). Only logged and checkpoint steps copy losses to the host (steplog.py): a GPU's queue
is not drained at every step.

Resuming (``resume=True``) restores model, target, optimiser, scheduler, step and RNG states; the
data stream is a function of (seed, step) (see dataset.py), so N steps + N resumed steps give the
same parameters as 2N uninterrupted steps (bit-identical on CPU).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..arch import cumulative_strides, stage_strides, stage_widths
from ..cards import ModelCard
from ..errors import OverwriteError, PglZooError
from ..messages import say
from ..resolve import model_card, resolve_model
from ..runs import StopFlag, atomic_write_json, load_state, read_jsonl
from ..training import TrainingRun, check_out_folder
from .augment import IntensityAugment
from .checkpoint import CHECKPOINT_NAME, rng_state, set_rng_state
from .config import RESUMABLE_OVERRIDES, PretrainConfig
from .data import PreparedData, PretrainVolume, prepare_volumes
from .dataset import StepSampler, ViewOptions, ViewPairDataset, make_loader
from .distributed import DistInfo, cleanup, launch_rank, setup
from .losses import cosine_momentum
from .model import OnlineNetwork, make_target, pgl_losses, update_target
from .optim import make_optimizer, make_scheduler
from .report import write_loss_curve
from .steplog import LossWatch
from .view_defaults import FLIP_P
from .views import pair_geometry

METRICS_NAME = "metrics.jsonl"
# collapse indicators (diagnostics.py) averaged over the last 10 logged steps into summary.json
INDICATOR_KEYS = ("std_global", "std_local_voxels", "std_local_channels")


@dataclass
class RunResult:
    """What a run returns: the last step reached, final (mean of the last 10) losses, where, and a
    digest of the online and target networks' exact parameters (to compare ranks or runs)."""

    step: int
    final_losses: dict[str, float]
    run_dir: Path
    interrupted: bool = False
    parameter_digest: str = ""


def resolve_preprocessing(cfg: PretrainConfig):
    """The card of ``cfg.model`` and its preprocessing with the run's ``--spacing``/``--window``/``--normalization``
    overrides."""
    card = model_card(cfg.model)
    return card, card.preprocessing.with_overrides(cfg.spacing, cfg.window, cfg.normalization)


def default_local_levels(n_stages: int) -> tuple[int, ...]:
    """The coarsest decoder level (project default; see README for the cost of finer levels)."""
    return (n_stages - 2,)


def train_step(model: torch.nn.Module, online: OnlineNetwork, target: torch.nn.Module,
               optimizer: torch.optim.Optimizer, batch, local_weight: float, momentum: float,
               clip_grad: float = 0.0, scheduler=None, amp: bool = False, local_control: str = "none"):
    """One PGL optimisation step: losses of both views, backward, clipping, optimiser (and scheduler)
    step, EMA update of the target. ``model`` is ``online`` or its DDP/compiled wrapper. Returns the
    losses (``total``, ``global_``, ``local``); the trainer and benchmarks/pretrain_step.py share it."""
    view_a, view_b, to_a, to_b = batch
    context = torch.autocast("cuda", dtype=torch.bfloat16) if amp else contextlib.nullcontext()
    with context:
        losses = pgl_losses(model, target, view_a, view_b, to_a, to_b, local_weight, local_control)
    optimizer.zero_grad(set_to_none=True)
    losses.total.backward()
    if clip_grad > 0:
        torch.nn.utils.clip_grad_norm_(online.parameters(), clip_grad)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    update_target(online.branch, target, momentum)
    return losses


def parameter_digest(*modules: torch.nn.Module) -> str:
    """sha256 over the exact bytes of every parameter (equal digests: identical parameters).

    Buffers are left out: under DDP, batch-norm running statistics of the heads are synchronised
    from rank 0 at each forward, then updated by each rank's own last batch.
    """
    h = hashlib.sha256()
    for module in modules:
        for name, tensor in module.named_parameters():
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def pretrain(cfg: PretrainConfig, volumes: list[PretrainVolume] | None = None) -> RunResult:
    """Run (or resume) PGL pretraining as configured; see the module docstring for the outputs.

    ``volumes``: already preprocessed volumes (``PretrainVolume(source, None, shape, array=...)``,
    float32 (z, y, x) at the card's spacing, windowed and normalised) used instead of reading
    ``cfg.data``; ``cfg.data`` then only names them in the run's records.

    Order: the --out checks and the run lock (rank 0), the checkpoint to resume, then the data, shared
    among the ranks through the cache (``prepare_volumes(share=(rank, world))``) *before* the process
    group exists, so no collective waits on preparation however large the archive; then training.
    """
    cfg.model = resolve_model(cfg.model).absolute_path or cfg.model  # a card path is stored absolute
    rank, world = launch_rank()
    run = PretrainRun(cfg, rank == 0)
    with run.locked():
        checkpoint = run.resume_point()
        if not cfg.data:
            raise PglZooError("no --data given")
        card, prep = resolve_preprocessing(cfg)
        patch = tuple(cfg.patch_size or card.patch_size_zyx)
        stride = cumulative_strides(stage_strides(card.arch))[-1]
        if any(p % s for p, s in zip(patch, stride, strict=True)):  # refused before any data is prepared
            raise PglZooError(f"--patch-size {'x'.join(map(str, patch))} must be a multiple of the network's "
                              f"total stride {'x'.join(map(str, stride))} (z, y, x)")
        data = PreparedData(list(volumes)) if volumes is not None else _load_data(cfg, (rank, world), prep,
                                                                                   card.modality, patch, run.warn)
        if run.is_main:
            say(f"data: {data.summary()}")
        info = setup(cfg.device)
        try:
            result = _pretrain(run, info, data, checkpoint, card, patch)
        except BaseException:
            cleanup()
            raise
        cleanup(synchronize=True)
        return result


RUN_FILES = ("config.json", METRICS_NAME, "summary.json", "loss.png", CHECKPOINT_NAME)


def _own_temporary(name: str) -> bool:
    """A temporary file of an atomic write of the run's own files (``.checkpoint.pt.XXXX.tmp``), left by a crash."""
    return any(name.startswith(f".{run_file}.") for run_file in RUN_FILES)


def check_out(cfg: PretrainConfig) -> None:
    """The --out policy: without ``resume`` the folder must be new, empty (a lock file and leftover
    temporary files of the run's own atomic writes aside) or a pretraining run that stopped before its
    first checkpoint (its own config.json and an empty metrics.jsonl), which is restarted; a folder with a
    checkpoint needs ``resume``; any other content (a fine-tuning run, a user's files) needs
    ``overwrite``, since config.json, summary.json and loss.png would be replaced and metrics.jsonl
    emptied. With ``resume`` the checkpoint is checked when it is loaded."""
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise OverwriteError(f"{out}: exists and is not a folder; choose another --out")
    if cfg.resume or not out.is_dir():
        return
    if (out / CHECKPOINT_NAME).exists():
        raise PglZooError(f"{out}: already holds a checkpoint; pass --resume to continue it or choose another --out")
    check_out_folder(out, cfg.overwrite, lambda held: f"{out}: is not empty and not a pretraining run ({held}); "
                     "choose an empty --out or pass --overwrite", ignore=_own_temporary, accept=_restartable)


def _restartable(out: Path, held: list[str]) -> bool:
    """Whether ``out`` holds a pretraining run that stopped before its first step (started again); one
    that logged steps but wrote no checkpoint is refused."""
    if not (set(held) <= {"config.json", METRICS_NAME} and _is_pretrain_config(out / "config.json")):
        return False
    try:
        logged = len(read_jsonl(out / METRICS_NAME))
    except PglZooError:
        logged = -1
    if logged == 0:
        return True
    raise OverwriteError(f"{out}: holds a pretraining run that logged steps but wrote no checkpoint to resume; "
                         "pass --overwrite to start it again (metrics.jsonl is emptied) or choose another --out")


def _is_pretrain_config(path: Path) -> bool:
    """Whether ``path`` is the config.json of a pretraining run (not a fine-tuning run's or a user's)."""
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(stored, dict) and {"scale_range", "overlap_range", "local_weight", "base_momentum"} <= set(stored)


class PretrainRun(TrainingRun):
    """The run folder of a pretraining run (:class:`pgl_zoo.training.TrainingRun`): ``checkpoint.pt``,
    ``config.json`` (the options, ``stop_after``, ``resume`` and ``overwrite`` reset), ``metrics.jsonl``
    trimmed by ``step``; the --out policy :func:`check_out`; a resumed run's options compared with
    ``cfg.to_dict()`` (:data:`pgl_zoo.pretrain.config.RESUMABLE_OVERRIDES` may change)."""

    may_change = RESUMABLE_OVERRIDES
    metrics_name = METRICS_NAME

    def __init__(self, cfg: PretrainConfig, is_main: bool = True) -> None:
        super().__init__(cfg.out, cfg.resume, cfg.overwrite, is_main)
        self.cfg = cfg

    @property
    def checkpoint_path(self) -> Path:
        return self.out / CHECKPOINT_NAME

    def check_out(self) -> None:
        check_out(self.cfg)

    def stored_config(self) -> dict[str, Any]:
        return {**self.cfg.to_dict(), "stop_after": None, "resume": False, "overwrite": False}

    def resume_config(self) -> dict[str, Any]:
        return self.cfg.to_dict()

    def resume_where(self) -> str:
        return self.cfg.out


def _load_data(cfg: PretrainConfig, share: tuple[int, int], prep, modality: str, patch: tuple[int, ...], warn):
    """Every rank prepares its share of the uncached volumes (``cfg.resolved_jobs`` processes each), helps
    with the rest, and waits for the others' through the cache; volumes smaller than the patch are
    reported (they are padded)."""
    main = share[0] == 0
    data = prepare_volumes(cfg.data, prep, modality, cfg.non_hu, cfg.cache_dir, warn=warn if main else lambda m: None,
                           jobs=cfg.resolved_jobs, share=share, progress=main)
    for v in data.volumes:
        small = [a for a, n, p in zip("zyx", v.shape_zyx, patch, strict=True) if n < p]
        if small:
            warn(f"{v.source}: smaller than the patch along {','.join(small)} "
                 f"({'x'.join(map(str, v.shape_zyx))} vs {'x'.join(map(str, patch))}); padded")
    return data


def _restore(checkpoint: dict[str, Any], ckpt_path: Path, online, target, optimizer, scheduler) -> int:
    """Networks, optimiser, scheduler and RNG states from a checkpoint; returns its step."""
    load_state(online, checkpoint["online"], f"{ckpt_path} (online network)")
    load_state(target, checkpoint["target"], f"{ckpt_path} (target network)")
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    set_rng_state(checkpoint["rng"])
    return int(checkpoint["step"])


@dataclass
class _Networks:
    """The online and target networks with their optimiser and scheduler. ``model`` is ``online`` or its
    DDP/compiled wrapper (what the forward pass runs); ``levels``: the decoder levels of the local loss."""

    online: OnlineNetwork
    target: torch.nn.Module
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    levels: tuple[int, ...]


@dataclass
class _Run:
    """One rank's pretraining run: its folder, settings, networks, the step reached (advanced by
    :func:`_train_step`) and the step it stops at (``end``)."""

    folder: PretrainRun
    cfg: PretrainConfig
    info: DistInfo
    card: ModelCard
    patch: tuple[int, ...]
    nets: _Networks
    data_record: dict[str, Any]
    step: int
    end: int

    @property
    def out(self) -> Path:
        return self.folder.out

    @property
    def ckpt_path(self) -> Path:
        return self.folder.checkpoint_path

    def checkpoint_state(self) -> dict[str, Any]:
        """What checkpoint.pt holds at the current step (RNG states read now)."""
        nets = self.nets
        return {"online": nets.online.state_dict(), "target": nets.target.state_dict(),
                "optimizer": nets.optimizer.state_dict(), "scheduler": nets.scheduler.state_dict(),
                "step": self.step, "rng": rng_state(), "config": self.cfg.to_dict(), "card": self.card.name,
                "card_file": resolve_model(self.cfg.model).absolute_path, "local_levels": list(self.nets.levels),
                "data": self.data_record}


def _build_networks(cfg: PretrainConfig, info: DistInfo, card: ModelCard,
                    checkpoint: dict[str, Any] | None) -> tuple[_Networks, int]:
    """Seeded networks, optimiser and scheduler, restored from ``checkpoint`` when resuming (RNG states
    included), then wrapped for DDP and ``torch.compile`` as configured; returns them and the start step."""
    torch.manual_seed(cfg.seed)
    levels = cfg.local_levels if cfg.local_levels is not None else default_local_levels(len(stage_widths(card.arch)))
    online = OnlineNetwork(card.arch, levels).to(info.device)
    target = make_target(online)
    optimizer = make_optimizer(online, cfg.optimizer, cfg.lr, cfg.weight_decay)
    scheduler = make_scheduler(optimizer, cfg.steps, cfg.resolved_warmup)
    step = 0
    if checkpoint is not None:
        step = _restore(checkpoint, Path(cfg.out) / CHECKPOINT_NAME, online, target, optimizer, scheduler)
        if info.is_main:
            say(f"resumed {Path(cfg.out)} at step {step}")
    model: torch.nn.Module = online
    if info.distributed:
        unused = cfg.local_weight == 0 or min(levels) > 0
        model = torch.nn.parallel.DistributedDataParallel(
            online, device_ids=[info.device.index] if info.device.type == "cuda" else None,
            find_unused_parameters=unused)
    if cfg.compile:
        model = torch.compile(model)
    return _Networks(online, target, model, optimizer, scheduler, levels), step


def _build_loader(cfg: PretrainConfig, info: DistInfo, data: PreparedData, patch: tuple[int, ...], step: int):
    """The loader of this rank's view pairs for steps ``step`` to the run's end (``cfg.steps``, or
    ``cfg.stop_after`` steps later); returns (loader, end step). ``patch``: (z, y, x) voxels."""
    dataset = ViewPairDataset(data.volumes, patch, cfg.seed,
                              ViewOptions(cfg.scale_range, cfg.overlap_range, FLIP_P, cfg.rotate), IntensityAugment())
    end = cfg.steps if cfg.stop_after is None else min(cfg.steps, step + cfg.stop_after)
    sampler = StepSampler(step, end, cfg.batch_size, info.rank, info.world_size)
    loader = make_loader(dataset, sampler, cfg.resolved_workers, pin_memory=info.device.type == "cuda")
    return loader, end


def _data_record(data: PreparedData) -> dict[str, Any]:
    """The data a run trained on, as checkpoint.pt and summary.json record it."""
    return {"count": len(data.volumes), "sources": [v.source for v in data.volumes],
            "skipped": [list(s) for s in data.skipped]}


class _RunLog:
    """The run's bookkeeping: the logged records and collapse warnings (every rank), the realised
    geometry of every step's view pairs, and on rank 0 metrics.jsonl (appended through the run folder)
    and the progress bar. A context manager: leaving it closes the progress bar."""

    def __init__(self, folder: PretrainRun, step: int, end: int, views_per_step: int) -> None:
        self.folder, self.views_per_step = folder, views_per_step
        self.history: list[dict[str, Any]] = []  # the logged records
        self.views_total, self.views_count = {"overlap": 0.0, "scale_ratio": 0.0}, 0
        self.collapse_warned: set[str] = set()
        self.start_clock(step)
        self.progress = folder.progress_bar(total=end, initial=step, unit="step", dynamic_ncols=True, desc="pretrain")

    def __enter__(self) -> _RunLog:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.close()

    def start_clock(self, step: int) -> None:
        """The time and step the first logged rate (views/s) is measured from."""
        self.t_last, self.step_last = time.perf_counter(), step

    def add_views(self, to_a, to_b, patch: tuple[int, ...]) -> dict[str, list[float]]:
        """Realised (overlap, scale ratio) of a step's view pairs (from the host affines ``to_a``, ``to_b``),
        added to the run's totals; returns them rounded, as a logged record holds them."""
        geometry = [pair_geometry(a, b, patch) for a, b in zip(to_a, to_b, strict=True)]
        realised = {"overlap": [round(g[0], 4) for g in geometry],
                    "scale_ratio": [round(g[1], 4) for g in geometry]}
        for key, values in realised.items():
            self.views_total[key] += sum(values)
        self.views_count += len(geometry)
        return realised

    def log_step(self, step: int, total: float, glob: float, loc: float | None, lr: float, momentum: float,
                 indicators: dict[str, Any] | None, realised: dict[str, list[float]]) -> None:
        """Record a logged step (losses averaged over ranks, ``loc`` None without a local loss), warn once
        per branch that looks collapsed, and on rank 0 append it to metrics.jsonl and the progress bar."""
        now = time.perf_counter()
        rate = self.views_per_step * (step - self.step_last) / max(now - self.t_last, 1e-9)
        self.t_last, self.step_last = now, step
        record = {"step": step, "loss": total, "loss_global": glob, "loss_local": loc,
                  "lr": lr, "momentum": momentum, "views_per_s": rate, "time": time.time(),
                  **(indicators or {}), **realised}
        for branch in ("global", "local"):
            if record.get(f"collapsed_{branch}") and branch not in self.collapse_warned:
                self.collapse_warned.add(branch)
                self.folder.warn(f"step {step}: the {branch} branch looks collapsed (std of its normalised "
                          f"projections {record.get('std_' + branch, record.get('std_local_voxels')):.2e}); "
                          "see metrics.jsonl")
        self.history.append(record)
        self.folder.append_metrics(record)  # rank 0; a full disk: one line naming the file
        if self.progress is not None:
            self.progress.set_postfix(loss=f"{total:.4f}", views_s=f"{rate:.1f}")

    def final_means(self) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
        """Final losses and collapse indicators (means of the last 10 logged records) and the mean realised
        view geometry of the run's steps; empty when nothing was logged."""
        last = self.history[-10:]
        final = {k: sum(r[k] for r in last) / len(last) for k in ("loss", "loss_global")} if last else {}
        if last and last[-1]["loss_local"] is not None:
            final["loss_local"] = sum(r["loss_local"] for r in last) / len(last)
        indicators = {k: sum(float(r[k]) for r in last) / len(last) for k in INDICATOR_KEYS if last and k in last[-1]}
        views = {k: float(v / self.views_count) for k, v in self.views_total.items()} if self.views_count else {}
        return final, indicators, views


def _pretrain(folder: PretrainRun, info: DistInfo, data: PreparedData, checkpoint: dict[str, Any] | None,
              card: ModelCard, patch: tuple[int, ...]) -> RunResult:
    """One rank's run once its data is prepared: networks (restored from ``checkpoint``), loader, rank 0's
    run folder, the steps, then the last checkpoint and summary. Raises KeyboardInterrupt after Ctrl-C."""
    cfg = folder.cfg
    nets, step = _build_networks(cfg, info, card, checkpoint)
    loader, end = _build_loader(cfg, info, data, patch, step)
    run = _Run(folder, cfg, info, card, patch, nets, _data_record(data), step, end)
    folder.open_folder(step)
    log = _RunLog(folder, step, end, 2 * cfg.batch_size * info.world_size)
    with log, folder.stopping() as flag:
        interrupted = _train(run, loader, log, flag)
    return _finish(run, log, interrupted)


def _train(run: _Run, loader, log: _RunLog, flag: StopFlag) -> bool:
    """The steps from ``run.step`` to ``run.end``; returns whether a stop was asked (Ctrl-C or SIGTERM on
    any rank), in which case the run stopped at a step boundary."""
    run.nets.online.train()
    run.nets.target.train()
    batches = iter(loader)
    # The losses stay on the device between checks (steplog.py): only logged and checkpoint steps
    # wait for the GPU. Under DDP the ranks agree on Ctrl-C (an all_reduce) only after such a step.
    watch = LossWatch(run.info, run.out)
    log.start_clock(run.step)
    log_every = run.cfg.resolved_log_every(run.info.device.type)
    use_amp = run.info.device.type == "cuda" and run.cfg.amp in ("auto", "bf16")
    interrupted = False
    stop_due = True
    while run.step < run.end:
        if stop_due and run.folder.stop_requested(flag, run.info.device, run.info.distributed):
            interrupted = True
            break
        # the step's losses (and the target's projections read for the indicators) are freed on return
        stop_due = _train_step(run, next(batches), watch, log, log_every, use_amp)
    if watch.unchecked:  # stopped between checks: never a checkpoint after a non-finite loss
        watch.check()
    return interrupted


def _train_step(run: _Run, batch, watch: LossWatch, log: _RunLog, log_every: int, use_amp: bool) -> bool:
    """One step of the run and its bookkeeping: :func:`train_step` on ``batch`` (view_a, view_b: (N, C, z,
    y, x) on the host; to_a, to_b: the views' host affines), then the logged record and the checkpoint when
    due. Returns whether the ranks should agree on a stop before the next step."""
    cfg, info, nets = run.cfg, run.info, run.nets
    view_a, view_b, to_a, to_b = batch
    batch = (view_a.to(info.device, non_blocking=True), view_b.to(info.device, non_blocking=True), to_a, to_b)
    lr = nets.optimizer.param_groups[0]["lr"]
    momentum = cosine_momentum(run.step, cfg.steps, cfg.base_momentum)
    losses = train_step(nets.model, nets.online, nets.target, nets.optimizer, batch, cfg.local_weight, momentum,
                        cfg.clip_grad, nets.scheduler, use_amp, cfg.local_control)
    run.step += 1
    step = run.step
    watch.add(losses, step)
    realised = log.add_views(to_a, to_b, run.patch)
    log_now = step % log_every == 0 or step == run.end  # the same on every rank
    checkpoint_now = cfg.checkpoint_every > 0 and step % cfg.checkpoint_every == 0 and step < run.end
    if log_now or checkpoint_now:
        total, glob, loc = watch.check()  # one host sync; raises on a non-finite loss
    if log_now:
        log.log_step(step, total, glob, loc if losses.local is not None else None, lr, momentum,
                     losses.indicators, realised)
    if log.progress is not None:
        log.progress.update(1)
    if checkpoint_now and info.is_main:
        run.folder.save(run.checkpoint_state())
    return not info.distributed or log_now or checkpoint_now


def _finish(run: _Run, log: _RunLog, interrupted: bool) -> RunResult:
    """The last checkpoint (at the end, or after Ctrl-C at a step boundary), summary.json, loss.png and the
    closing line (rank 0); the run's result, or KeyboardInterrupt when it was stopped."""
    cfg, info = run.cfg, run.info
    if info.is_main:
        run.folder.save(run.checkpoint_state())
    final, indicators, views = log.final_means()
    if info.is_main:
        summary = {"step": run.step, "steps": cfg.steps, "final_losses": final, "final_indicators": indicators,
                   "views_mean": views, "local_control": cfg.local_control, "data": run.data_record,
                   "card": run.card.name, "local_levels": list(run.nets.levels), "interrupted": interrupted}
        atomic_write_json(run.out / "summary.json", summary)
        write_loss_curve(run.folder.metrics_path, run.out / "loss.png")
        say(f"{'stopped' if interrupted else 'done'} at step {run.step}/{cfg.steps}; checkpoint: {run.ckpt_path}")
    result = RunResult(run.step, final, run.out, interrupted, parameter_digest(run.nets.online, run.nets.target))
    if interrupted:
        raise KeyboardInterrupt
    return result

