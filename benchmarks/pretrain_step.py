"""Benchmark of PGL pretraining: step time of PGL vs the BYOL baseline, data-pipeline throughput, memory.

From one run on the same network (a registered card, default pgl-ct) and the same batch of
view pairs, prints:

* PGL step time (local weight 1, the default decoder level unless --local-scales), BYOL step time
  (local weight 0: no decoder, no local heads) and their ratio; steps are interleaved so that both
  see the same machine load. A step = forward of online and target on both views, losses,
  backward, AdamW step, EMA update: the trainer's own ``train_step``, minus logging.
* Views per second produced by the data pipeline (DataLoader with the default number of workers,
  real CT from ../shared/data/ct when present (and SimpleITK), else synthetic in-memory volumes), against
  the views per second the model consumes in a PGL step, and their ratio.
* Peak memory: the process's peak resident set size (CPU) or peak CUDA memory allocated.
* FLOP rate of each step (forward and backward FLOPs counted by ``torch.utils.flop_counter``)
  against a 2048 x 2048 float32 matrix product measured in the same run (the practical limit).

Usage::

    python benchmarks/pretrain_step.py                       # pgl-ct, batch 4, the card's patch
    python benchmarks/pretrain_step.py --batch-size 2 --patch-size 16,64,64 --steps 5
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pgl_zoo.arch import stage_widths
from pgl_zoo.pretrain.config import default_workers
from pgl_zoo.pretrain.data import PretrainVolume, prepare_volumes
from pgl_zoo.pretrain.dataset import StepSampler, ViewPairDataset, make_loader
from pgl_zoo.pretrain.losses import cosine_momentum
from pgl_zoo.pretrain.model import OnlineNetwork, make_target
from pgl_zoo.pretrain.trainer import default_local_levels, train_step
from pgl_zoo.registry import get_card

DATA = Path(os.environ.get("PGL_ZOO_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) / "ct"


def synthetic_volumes(n: int = 3, shape_zyx: tuple[int, int, int] = (120, 128, 128), seed: int = 0
                      ) -> list[PretrainVolume]:
    """``n`` in-memory volumes already preprocessed (float32, zero mean, unit variance; about a chest CT at
    4 mm), for machines without ../shared/data or without SimpleITK (a lent GPU)."""
    rng = np.random.default_rng(seed)
    return [PretrainVolume(f"synthetic_{i}", None, shape_zyx, array=rng.standard_normal(shape_zyx, dtype=np.float32))
            for i in range(n)]


def simpleitk_usable() -> bool:
    """SimpleITK is installed (not benchmarks/gpu_check.py's empty stand-in for a machine without it)."""
    try:
        import SimpleITK as sitk
    except ImportError:
        return False
    return hasattr(sitk, "ReadImage")


def load_volumes(card, cache: Path, real: bool = True) -> tuple[list[PretrainVolume], str]:
    """(volumes, where from): the real CT of ../shared/data/ct preprocessed as ``card`` says (cached in
    ``cache``) when ``real`` and that folder and SimpleITK are at hand, else :func:`synthetic_volumes`."""
    if real and DATA.is_dir() and simpleitk_usable():
        data = prepare_volumes(DATA, card.preprocessing, card.modality, "rescale", cache, warn=lambda m: None)
        return data.volumes, f"{DATA} ({len(data.volumes)} volumes)"
    why = "asked for" if not real else "no SimpleITK" if DATA.is_dir() else f"no {DATA}"
    volumes = synthetic_volumes()
    return volumes, f"synthetic ({len(volumes)} x {'x'.join(map(str, volumes[0].shape_zyx))}; {why})"


def one_batch(dataset: ViewPairDataset, batch_size: int, device) -> list:
    """The first batch of view pairs, its views on ``device`` (affines stay on the host, as in the trainer)."""
    batch = next(iter(make_loader(dataset, StepSampler(0, 1, batch_size), 0)))
    return [t.to(device) if i < 2 else t for i, t in enumerate(batch)]


def make_nets(card, levels, device, compile_: bool = False, backend: str = "inductor"):
    """(online, target, optimizer, model) as the trainer builds them; ``model``: online's compiled wrapper
    (``torch.compile`` as the trainer calls it, with ``backend``) or None."""
    online = OnlineNetwork(card.arch, levels).to(device)
    target = make_target(online)
    optimizer = torch.optim.AdamW(online.parameters(), lr=1e-4)
    return online, target, optimizer, (torch.compile(online, backend=backend) if compile_ else None)


def timed_step(online, target, optimizer, batch, local_weight: float, device, model=None,
               amp: bool | None = None) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one training step (``model``: online's compiled
    wrapper, as ``pgl-zoo pretrain --compile`` uses it; ``amp``: bf16 autocast, default on CUDA)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start, cpu_start = time.perf_counter(), time.process_time()
    losses = train_step(online if model is None else model, online, target, optimizer, batch, local_weight,
                        cosine_momentum(1, 100), clip_grad=1.0,
                        amp=device.type == "cuda" if amp is None else amp)  # the trainer's own step
    losses.total.detach().item()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, time.process_time() - cpu_start


def steady_step_seconds(online, target, optimizer, batch, local_weight: float, device, model=None,
                        amp: bool | None = None, max_steps: int = 20, max_seconds: float = 10.0,
                        chunk: int = 5) -> list[float]:
    """Seconds per step, one value per chunk of ``chunk`` steps run back to back with one host sync at its
    end (as the trainer runs between logged steps), until ``max_steps`` or ``max_seconds``."""
    amp = device.type == "cuda" if amp is None else amp
    per_step: list[float] = []
    started, done = time.perf_counter(), 0
    while done < max_steps and time.perf_counter() - started < max_seconds:
        n = min(chunk, max_steps - done)
        t0 = time.perf_counter()
        for _ in range(n):
            losses = train_step(online if model is None else model, online, target, optimizer, batch, local_weight,
                                cosine_momentum(1, 100), clip_grad=1.0, amp=amp)
        losses.total.detach().item()  # waits for the queued steps
        per_step.append((time.perf_counter() - t0) / n)
        done += n
    return per_step


def step_flops(online, target, optimizer, batch, local_weight: float, device) -> float:
    """Forward + backward FLOPs of one training step (the optimiser and EMA add no FLOPs counted here)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        timed_step(online, target, optimizer, batch, local_weight, device)
    return float(counter.get_total_flops())


def peak_memory_mib(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="pgl-ct")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--patch-size", default=None, help="z,y,x (default: the card's)")
    parser.add_argument("--local-scales", default=None, help="decoder levels, e.g. 2 or 1,2 (default: coarsest)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per mode (after 1 warm-up step)")
    parser.add_argument("--data-batches", type=int, default=12, help="batches timed from the data pipeline")
    parser.add_argument("--workers", type=int, default=None, help="data workers (default: the trainer's default)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the online network, as pretrain --compile does")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    card = get_card(args.model)
    patch = tuple(int(v) for v in args.patch_size.split(",")) if args.patch_size else card.patch_size_zyx
    levels = (tuple(int(v) for v in args.local_scales.split(",")) if args.local_scales
              else default_local_levels(len(stage_widths(card.arch))))
    workers = default_workers() if args.workers is None else args.workers
    print(f"device {device} ({torch.get_num_threads()} threads), model {card.name}, batch {args.batch_size} pairs, "
          f"patch {'x'.join(map(str, patch))}, local levels {list(levels)}, torch {torch.__version__}"
          f"{', online network compiled' if args.compile else ', eager'}")

    with tempfile.TemporaryDirectory() as tmp:
        volumes, source = load_volumes(card, Path(tmp) / "cache")
        dataset = ViewPairDataset(volumes, patch, seed=0)
        print(f"data: {source}")

        batch = one_batch(dataset, args.batch_size, device)  # one fixed batch for both modes

        torch.manual_seed(0)
        nets = {}
        for name, weight in (("BYOL", 0.0), ("PGL", 1.0)):
            online, target, optimizer, model = make_nets(card, levels, device, args.compile)
            nets[name] = (online, target, optimizer, weight, model)
            started = time.perf_counter()
            timed_step(online, target, optimizer, batch, weight, device, model)  # warm-up (and compilation)
            compiling = " (compiling)" if args.compile else ""
            print(f"{name}: first step {time.perf_counter() - started:.1f} s{compiling}")
        flops = {name: step_flops(*nets[name][:3], batch, nets[name][3], device) for name in nets}
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from inference import matmul_gflops

        limit = matmul_gflops(str(device))
        times: dict[str, list[float]] = {"BYOL": [], "PGL": []}
        cpu: dict[str, list[float]] = {"BYOL": [], "PGL": []}
        for _ in range(args.steps):
            for name, (online, target, optimizer, weight, model) in nets.items():
                wall, used = timed_step(online, target, optimizer, batch, weight, device, model)
                times[name].append(wall)
                cpu[name].append(used)
        # The minimum is the estimate least disturbed by other load on the machine (as timeit does);
        # on a shared CPU the process's CPU time is steadier still (best with --threads 1).
        t_pgl, t_byol = min(times["PGL"]), min(times["BYOL"])
        views_per_step = 2 * args.batch_size
        for name in ("PGL", "BYOL"):
            print(f"{name:4s} step: {min(times[name]) * 1000:9.1f} ms min, {statistics.median(times[name]) * 1000:.1f} "
                  f"ms median of {args.steps} wall (all: {', '.join(f'{t * 1000:.0f}' for t in times[name])}); "
                  f"CPU time min {min(cpu[name]) * 1000:.1f} ms")
        print(f"PGL / BYOL step-time ratio: {t_pgl / t_byol:.3f} (min wall), "
              f"{statistics.median(times['PGL']) / statistics.median(times['BYOL']):.3f} (median wall), "
              f"{min(cpu['PGL']) / min(cpu['BYOL']):.3f} (min CPU time)")
        limit = max(limit, matmul_gflops(str(device)))
        for name in ("PGL", "BYOL"):
            rate = flops[name] / min(times[name]) / 1e9
            print(f"{name:4s} step: {flops[name] / 1e9:.1f} GFLOP (forward + backward), {rate:.1f} GFLOP/s = "
                  f"{rate / limit:.0%} of the matrix-product limit {limit:.1f} GFLOP/s (2048^3 float32, same run)")
        print(f"PGL / BYOL FLOPs: {flops['PGL'] / flops['BYOL']:.3f}")
        kind = "CUDA allocated" if device.type == "cuda" else "process RSS"
        print(f"peak memory: {peak_memory_mib(device):.0f} MiB ({kind})")

        # Data pipeline alone, default workers, no model running.
        loader = make_loader(dataset, StepSampler(0, args.data_batches + 2, args.batch_size), workers)
        iterator = iter(loader)
        next(iterator)  # start-up of the workers is not throughput
        start = time.perf_counter()
        count = 0
        for a, _, _, _ in iterator:
            count += 2 * a.shape[0]
        elapsed = time.perf_counter() - start
        produced = count / elapsed
        consumed = views_per_step / t_pgl
        print(f"data pipeline: {produced:.1f} views/s with {workers} worker(s); model consumes "
              f"{consumed:.1f} views/s (PGL); pipeline / model = {produced / consumed:.1f}x")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
