"""Sliding-window segmentation of a real CT: pgl-zoo against MONAI, and against the CPU's own limit.

Both sides get the same network and weights (the zoo's pgl-lungs-ct), the same preprocessed volume
(a real LCTSC chest CT preprocessed as the card says), window (the card's patch), overlap and
Gaussian blending (sigma 0.125 of the window). MONAI runs as its users run it: eager network,
default memory format, ``sliding_window_inference(..., mode="gaussian")`` then ``argmax``. pgl-zoo
runs ``predict_label`` (what ``pgl-zoo segment`` runs), eager and with ``--compile``.

Prints, from one run (times are medians of --repeats, interleaved, after a warm-up):
- each variant's time and its ratio to MONAI at batch 4 (MONAI's tutorials' ``sw_batch_size``) and
  at pgl-zoo's batch; above 1 means pgl-zoo is faster;
- agreement: the largest difference of the softmax probabilities and the share of identical labels;
- FLOP rates: the network's useful FLOPs (``torch.utils.flop_counter``, windows x FLOPs per window)
  per second of each variant, against a 2048 x 2048 float32 matrix product measured in the same
  run (the practical limit of these cores), and the compiled network alone on one window batch.

    python benchmarks/inference.py                      # lung_006 (not in the model's training set)
    python benchmarks/inference.py --overlap 0.25 --repeats 5 --device cuda
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

DATA = Path(os.environ.get("PGL_ZOO_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))  # as the tests
SHARED = DATA / "ct" / "lctsc_lungs" / "imagesTr"


def matmul_gflops(device: str, n: int = 2048, repeats: int = 20) -> float:
    """Best float32 n x n matrix-product rate, in GFLOP/s."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    best = float("inf")
    for _ in range(repeats + 2):
        _sync(device)
        started = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - started)
    return 2 * n**3 / best / 1e9


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def window_flops(network, window_batch: torch.Tensor) -> float:
    """FLOPs of one forward pass per window (convolutions and matrix products, as torch counts them)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        network(window_batch)
    return counter.get_total_flops() / window_batch.shape[0]


def compare_with_monai(network, array: np.ndarray, roi: tuple[int, ...], device: str, overlap: float = 0.5,
                       batch: int | None = None, monai_batch: int = 4, repeats: int = 3, compile_: bool = True,
                       alone: bool = True, matmul_n: int = 2048) -> dict:
    """Sliding-window segmentation of the preprocessed ``array`` (z, y, x) by ``network``: MONAI's
    ``sliding_window_inference`` (gaussian, sigma 0.125, then argmax) against pgl-zoo's ``predict_label``
    (what ``pgl-zoo segment`` runs), eager and (``compile_``) compiled. Times are medians of ``repeats``
    interleaved runs after a warm-up. Returns {"times": {variant: [s, ...]}, "windows", "flops" (network
    FLOPs per pass over the volume), "limit" (GFLOP/s of a float32 matrix product), "compile_seconds",
    "max_probability_difference" {eager, compiled}, "identical_labels" {variant: share of voxels},
    "alone" {eager, compiled: GFLOP/s of the network alone on one window batch}}; ``matmul_n``: size of the
    matrix product giving the limit. Needs MONAI."""
    from monai.inferers import sliding_window_inference

    from pgl_zoo.compile import compile_for_inference
    from pgl_zoo.sliding_window import default_window_batch, predict_label, sliding_window_predict, window_starts

    volume = torch.from_numpy(array)[None, None].to(device)
    batch = batch or default_window_batch(device)
    windows = int(np.prod([len(window_starts(max(n, r), r, overlap)) for n, r in zip(array.shape, roi,
                                                                                      strict=True)]))
    flops = window_flops(network, torch.zeros(batch, 1, *roi, device=device)) * windows

    def monai(sw_batch: int):
        def run():
            with torch.inference_mode():
                scores = sliding_window_inference(volume, roi, sw_batch, network, overlap=overlap,
                                                  mode="gaussian", sigma_scale=0.125)
                return scores[0].argmax(0).to(torch.uint8).cpu().numpy()
        return run

    variants = {
        f"MONAI, batch {monai_batch}": monai(monai_batch),
        f"MONAI, batch {batch}": monai(batch),
        f"pgl-zoo eager, batch {batch}": lambda: predict_label(network, array, roi, overlap, batch),
    }
    compile_seconds = None
    if compile_:
        started = time.perf_counter()
        compiled = compile_for_inference(network)
        predict_label(compiled, array, roi, overlap, batch)  # compiles
        compile_seconds = time.perf_counter() - started
        variants[f"pgl-zoo compiled, batch {batch}"] = lambda: predict_label(compiled, array, roi, overlap, batch)
    if monai_batch == batch:
        del variants[f"MONAI, batch {batch}"]
    labels = {name: run() for name, run in variants.items()}  # warm-up, and the labels to compare
    limit = matmul_gflops(device, matmul_n)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):  # interleaved, so that load changes hit all alike
        for name, run in variants.items():
            _sync(device)
            started = time.perf_counter()
            run()
            _sync(device)
            times[name].append(time.perf_counter() - started)
    limit = max(limit, matmul_gflops(device, matmul_n))

    # agreement of the probabilities (pgl-zoo's blend, softmax) with MONAI's
    with torch.inference_mode():
        reference = sliding_window_inference(volume, roi, monai_batch, network, overlap=overlap,
                                             mode="gaussian", sigma_scale=0.125).softmax(1)
        probabilities = {"eager": sliding_window_predict(network, volume, roi, overlap, batch).softmax(1)}
        if compile_:
            probabilities["compiled"] = sliding_window_predict(compiled, volume, roi, overlap, batch,
                                                               fixed_batch=True).softmax(1)
    # the network alone on one window batch (no blending), eager and compiled
    rates = {}
    x = torch.randn(batch, 1, *roi, device=device)
    for name, net in (("eager", network), ("compiled", compiled if compile_ else None)):
        if net is None or not alone:
            continue
        with torch.inference_mode():
            net(x)
            runs = []
            for _ in range(5):
                _sync(device)
                started = time.perf_counter()
                net(x)
                _sync(device)
                runs.append(time.perf_counter() - started)
        rates[name] = window_flops(network, x) * batch / min(runs) / 1e9
    reference_labels = reference[0].argmax(0).to(torch.uint8).cpu().numpy()
    return {"times": times, "windows": windows, "flops": flops, "limit": limit, "batch": batch,
            "compile_seconds": compile_seconds, "alone": rates,
            "max_probability_difference": {name: float((p - reference).abs().max())
                                           for name, p in probabilities.items()},
            "identical_labels": {name: float((label == reference_labels).mean()) for name, label in labels.items()
                                 if not name.startswith("MONAI")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default=str(SHARED / "lung_006.nii.gz"), help="a CT file")
    parser.add_argument("--model", default="pgl-lungs-ct", help="zoo segmentation model (or model folder)")
    parser.add_argument("--overlap", type=float, default=0.5, help="as pgl-zoo segment's default")
    parser.add_argument("--sw-batch-size", type=int, default=None, help="pgl-zoo's window batch (default: its own)")
    parser.add_argument("--monai-batch", type=int, default=4, help="MONAI's sw_batch_size")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-compile", action="store_true", help="leave out the compiled variant")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    from pgl_zoo.api import load_segmentation_model
    from pgl_zoo.imaging.read import read_image
    from pgl_zoo.preprocessing.scan import preprocess_image

    device = args.device
    network, card = load_segmentation_model(args.model, map_location=device)
    network.eval()
    roi = tuple(card.patch_size_zyx)
    array = preprocess_image(read_image(args.image), card.preprocessing).array
    result = compare_with_monai(network, array, roi, device, args.overlap, args.sw_batch_size, args.monai_batch,
                                args.repeats, compile_=not args.no_compile)
    times, flops, limit = result["times"], result["flops"], result["limit"]

    where = torch.cuda.get_device_name() if device.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    print(f"command: python {' '.join(sys.argv)}")
    print(f"device: {where}; torch {torch.__version__}; model {card.name} ({card.num_classes} classes)")
    print(f"volume: {Path(args.image).name} preprocessed to {tuple(array.shape)} (z, y, x); window {roi}; overlap "
          f"{args.overlap}; {result['windows']} windows; {flops / 1e9:.1f} GFLOP of network per pass over the volume")
    print(f"matrix-product limit (2048^3 float32, best of 20, before and after): {limit:.1f} GFLOP/s")
    median = {name: statistics.median(values) for name, values in times.items()}
    monai_times = {name: t for name, t in median.items() if name.startswith("MONAI")}
    for name, seconds in median.items():
        runs = ", ".join(f"{t:.3f}" for t in times[name])
        ratios = "; ".join(f"{m / seconds:.2f}x {other}" for other, m in monai_times.items() if other != name)
        rate = flops / seconds / 1e9
        print(f"  {name:28s} median {seconds:.3f} s (runs {runs}); {rate:.1f} GFLOP/s = {rate / limit:.0%} of "
              f"the limit" + (f"; speed vs {ratios}" if not name.startswith("MONAI") else ""))
    if result["compile_seconds"] is not None:
        print(f"  compiling (once per process; inductor's disk cache makes later processes faster): "
              f"{result['compile_seconds']:.1f} s")
    for name, rate in result["alone"].items():
        print(f"  network alone, {name}, one batch of {result['batch']} windows: {rate:.1f} GFLOP/s = "
              f"{rate / limit:.0%} of the limit")
    for name, difference in result["max_probability_difference"].items():
        print(f"  pgl-zoo {name}: max |probability - MONAI's| {difference:.2e}")
    for name, share in result["identical_labels"].items():
        print(f"  {name}: labels identical to MONAI's on {share:.5%} of voxels")


if __name__ == "__main__":
    main()
