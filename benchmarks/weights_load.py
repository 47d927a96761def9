"""Loading weights: safetensors (with and without our sha256 check) against torch.load, side by side.

Usage: python benchmarks/weights_load.py [--model pgl-ct] [--repeats 5]

Both files hold the same state dict (the encoder of MODEL, float32). Times are the median of
``--repeats`` warm loads (the files are in the page cache after the first read), on this machine.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

import pgl_zoo
from pgl_zoo.hashing import sha256_file
from pgl_zoo.weights import read_state_dict


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up: page cache, lazy imports
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="pgl-ct")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    net = pgl_zoo.pgl_unet3d(1, encoder=args.model, pretrained=False)
    card = pgl_zoo.get_card(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        folder = pgl_zoo.save_pretrained(net.state_dict(), card, Path(tmp) / "st")
        st_path = folder / "model.safetensors"
        state = load_file(str(st_path))
        pt_path = Path(tmp) / "model.pt"
        torch.save(state, pt_path)
        digest = sha256_file(st_path)
        size_mb = st_path.stat().st_size / 2**20
        rows = {
            "safetensors load_file": median_seconds(lambda: load_file(str(st_path)), args.repeats),
            "safetensors + sha256 + tensor checks (pgl-zoo)": median_seconds(
                lambda: read_state_dict(st_path, card.replace(sha256=digest, size_bytes=None)), args.repeats),
            "torch.load(weights_only=True)": median_seconds(
                lambda: torch.load(pt_path, weights_only=True), args.repeats
            ),
            "torch.load(weights_only, mmap)": median_seconds(
                lambda: torch.load(pt_path, weights_only=True, mmap=True), args.repeats
            ),
            "load_pgl_encoder (end to end)": median_seconds(
                lambda: pgl_zoo.load_pgl_encoder(args.model, weights=folder), args.repeats
            ),
        }
    base = rows["torch.load(weights_only=True)"]
    cpu = platform.processor() or platform.machine()
    print(f"{args.model} encoder, {len(state)} tensors, {size_mb:.1f} MiB; {cpu}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; median of {args.repeats}")
    print(f"{'method':<34} {'ms':>8} {'ratio to torch.load':>20}")
    for name, seconds in rows.items():
        print(f"{name:<34} {1000 * seconds:8.1f} {seconds / base:20.2f}")


if __name__ == "__main__":
    main()
