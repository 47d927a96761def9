"""Benchmark of PGL pretraining: step time of PGL vs the BYOL baseline, data-pipeline throughput, memory.

From one run on the same network (a registered card, default pgl-ct-tiny) and the same batch of
view pairs, prints:

* PGL step time (local weight 1, the default decoder level unless --local-scales), BYOL step time
  (local weight 0: no decoder, no local heads) and their ratio; steps are interleaved so that both
  see the same machine load. A step = forward of online and target on both views, losses,
  backward, AdamW step, EMA update: the trainer's own ``train_step``, minus logging.
* Views per second produced by the data pipeline (DataLoader with the default number of workers,
  real CT from ../shared/data/ct when present, else synthetic volumes), against the views per
  second the model consumes in a PGL step, and their ratio.
* Peak memory: the process's peak resident set size (CPU) or peak CUDA memory allocated.

Usage::

    python benchmarks/pretrain_step.py                       # tiny network, batch 4, card patch
    python benchmarks/pretrain_step.py --batch-size 2 --patch-size 16,64,64 --steps 5
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pgl_zoo.architecture import stage_widths
from pgl_zoo.pretrain.config import default_workers
from pgl_zoo.pretrain.data import prepare_volumes
from pgl_zoo.pretrain.dataset import StepSampler, ViewPairDataset, make_loader
from pgl_zoo.pretrain.losses import cosine_momentum
from pgl_zoo.pretrain.model import OnlineNetwork, make_target
from pgl_zoo.pretrain.trainer import default_local_levels, train_step
from pgl_zoo.registry import get_card

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ct"


def synthetic_folder(root: Path, n: int = 3) -> Path:
    import SimpleITK as sitk

    rng = np.random.default_rng(0)
    for i in range(n):
        array = (rng.normal(0, 300, (80, 160, 160)) - 300).astype(np.int16)
        sitk.WriteImage(sitk.GetImageFromArray(array), str(root / f"synthetic_{i}.nii.gz"))
    return root


def timed_step(online, target, optimizer, batch, local_weight: float, device) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one training step."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start, cpu_start = time.perf_counter(), time.process_time()
    losses = train_step(online, online, target, optimizer, batch, local_weight, cosine_momentum(1, 100),
                        clip_grad=1.0, amp=device.type == "cuda")  # the trainer's own step
    losses.total.detach().item()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, time.process_time() - cpu_start


def peak_memory_mib(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="pgl-ct-tiny")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--patch-size", default=None, help="z,y,x (default: the card's)")
    parser.add_argument("--local-scales", default=None, help="decoder levels, e.g. 2 or 1,2 (default: coarsest)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per mode (after 1 warm-up step)")
    parser.add_argument("--data-batches", type=int, default=12, help="batches timed from the data pipeline")
    parser.add_argument("--workers", type=int, default=None, help="data workers (default: the trainer's default)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
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
          f"patch {'x'.join(map(str, patch))}, local levels {list(levels)}, torch {torch.__version__}")

    with tempfile.TemporaryDirectory() as tmp:
        source = DATA if DATA.is_dir() else synthetic_folder(Path(tmp))
        data = prepare_volumes(source, card.preprocessing, card.modality, "rescale", Path(tmp) / "cache",
                               warn=lambda m: None)
        dataset = ViewPairDataset(data.volumes, patch, seed=0)
        print(f"data: {source} ({len(data.volumes)} volumes)")

        # One fixed batch for both modes.
        batch = next(iter(make_loader(dataset, StepSampler(0, 1, args.batch_size), 0)))
        batch = [t.to(device) if i < 2 else t for i, t in enumerate(batch)]

        torch.manual_seed(0)
        nets = {}
        for name, weight in (("BYOL", 0.0), ("PGL", 1.0)):
            online = OnlineNetwork(card.arch, levels).to(device)
            target = make_target(online)
            optimizer = torch.optim.AdamW(online.parameters(), lr=1e-4)
            nets[name] = (online, target, optimizer, weight)
            timed_step(online, target, optimizer, batch, weight, device)  # warm-up
        times: dict[str, list[float]] = {"BYOL": [], "PGL": []}
        cpu: dict[str, list[float]] = {"BYOL": [], "PGL": []}
        for _ in range(args.steps):
            for name, (online, target, optimizer, weight) in nets.items():
                wall, used = timed_step(online, target, optimizer, batch, weight, device)
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
