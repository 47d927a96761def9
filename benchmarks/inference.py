"""Sliding-window inference: pgl-zoo against MONAI, same network, volume, window, overlap and batch.

Prints, from one run: each implementation's time (median of --repeats, interleaved, warm), their
ratio (ours / MONAI; below 1 means pgl-zoo is faster), the largest difference of their outputs, and
the peak memory of each. On CPU the peak is the rise of the peak resident set size (ru_maxrss) of a
fresh Python process that runs the call once, so the two never share a high-water mark; on GPU it
is torch.cuda.max_memory_allocated. Default volume: the 30-slice TotalSegmentator CT preprocessed
as the card says (2 mm: 45 x 152 x 183 voxels); window: the card's patch.

    python benchmarks/inference.py                        # real CT, pgl-ct-tiny architecture
    python benchmarks/inference.py --model pgl-ct --size 64,160,160 --overlap 0.5 --device cuda
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from pgl_zoo.inference import sliding_window_predict
from pgl_zoo.nets import build_unet
from pgl_zoo.registry import get_card

CT = Path(__file__).resolve().parents[2] / "shared" / "data" / "ct" / "totalseg_patient_a" / "example_ct_sm.nii.gz"


def _volume(args, card) -> tuple[torch.Tensor, str]:
    if args.size:
        shape = tuple(int(s) for s in args.size.split(","))
        generator = torch.Generator().manual_seed(0)
        return torch.randn(1, 1, *shape, generator=generator), f"random {shape}"
    from pgl_zoo.imaging import preprocess_image, read_image

    prepared = preprocess_image(read_image(CT), card.preprocessing)
    return torch.from_numpy(prepared.array)[None, None], f"{CT.name} preprocessed as {card.name} {prepared.array.shape}"


def _runners(net, roi, args):
    from monai.inferers import sliding_window_inference

    def ours(x):
        return sliding_window_predict(net, x, roi, overlap=args.overlap, sw_batch_size=args.sw_batch_size)

    def monai(x):
        with torch.inference_mode():
            return sliding_window_inference(x, roi, args.sw_batch_size, net, overlap=args.overlap, mode="gaussian",
                                            sigma_scale=0.125)

    return {"pgl-zoo": ours, "MONAI": monai}


def _peak_rss_rise_in_subprocess(name: str, argv: list[str]) -> float:
    """Peak RSS rise (MiB) of one call of implementation ``name`` in a fresh Python process.

    The child builds the same network and volume, notes its resident set size, runs the call once
    and reports how far its peak (ru_maxrss) rose above that, so the implementations never share a
    high-water mark. (A fresh process rather than fork: forking after OpenMP work can hang.)
    """
    run = subprocess.run([sys.executable, __file__, *argv, "--child", name], capture_output=True, text=True,
                         check=True)
    return float(run.stdout.strip().splitlines()[-1])


def _child(name: str, runners, x) -> None:
    with open("/proc/self/statm") as handle:
        start_kib = int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1024
    runners[name](x)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(f"{(peak_kib - start_kib) / 1024:.1f}")


def _on_gpu(function, x) -> tuple[float, float]:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    started = time.perf_counter()
    function(x)
    torch.cuda.synchronize()
    return time.perf_counter() - started, (torch.cuda.max_memory_allocated() - base) / 2**20


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="pgl-ct-tiny", help="zoo card whose architecture (untrained) to run")
    parser.add_argument("--size", help="random volume Z,Y,X instead of the real CT")
    parser.add_argument("--window", help="window Z,Y,X (default: the card's patch size)")
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--sw-batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    card = get_card(args.model)
    roi = tuple(int(s) for s in args.window.split(",")) if args.window else tuple(card.patch_size_zyx)
    torch.manual_seed(0)
    net = build_unet(card.arch, num_classes=4).eval().to(args.device)
    x, description = _volume(args, card)
    x = x.to(args.device)
    runners = _runners(net, roi, args)
    if args.child:
        _child(args.child, runners, x)
        return
    outputs = {name: run(x) for name, run in runners.items()}  # warm-up, and the outputs to compare
    difference = float((outputs["pgl-zoo"] - torch.as_tensor(outputs["MONAI"])).abs().max())
    del outputs
    gpu = args.device.startswith("cuda")
    times: dict[str, list[float]] = {name: [] for name in runners}
    peaks: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(args.repeats):  # interleaved, so that load changes hit both alike
        for name, run in runners.items():
            if gpu:
                seconds, mib = _on_gpu(run, x)
                peaks[name].append(mib)
            else:
                started = time.perf_counter()
                run(x)
                seconds = time.perf_counter() - started
            times[name].append(seconds)
    if not gpu:
        peaks = {name: [_peak_rss_rise_in_subprocess(name, argv)] for name in runners}
    peak = {name: max(values) for name, values in peaks.items()}
    median = {name: statistics.median(values) for name, values in times.items()}
    device = torch.cuda.get_device_name() if gpu else f"CPU, {torch.get_num_threads()} threads"
    print(f"command: python {' '.join([sys.argv[0], *argv])}")
    print(f"device: {device}; torch {torch.__version__}; network: {card.name} architecture, 4 classes")
    print(f"volume: {description}; window {roi}; overlap {args.overlap}; window batch {args.sw_batch_size}")
    memory = "peak GPU memory" if gpu else "peak RSS rise"
    for name in runners:
        runs = ", ".join(f"{t:.3f}" for t in times[name])
        print(f"{name:8s} median {median[name]:.3f} s  (runs: {runs})  {memory} {peak[name]:.0f} MiB")
    print(f"ratio pgl-zoo / MONAI: {median['pgl-zoo'] / median['MONAI']:.3f}")
    print(f"max |difference| of outputs: {difference:.2e}")


if __name__ == "__main__":
    main()
