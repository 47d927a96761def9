"""Peak memory of segmenting one CT-sized volume (default 512 x 512 x 300 int16) against its raw size.

Writes a synthetic int16 volume (uncompressed NRRD; random HU-like values, since memory does not
depend on the content) and a small, randomly initialised segmentation network at native spacing
(so the network sees the full 512 x 512 grid and the class scores would be volume-sized), then, in a
fresh Python process, loads the network, notes the resident set size and resets the kernel's peak
(Linux only), runs ``pgl_zoo.inference.segment_files`` (what ``pgl-zoo segment`` runs) and reads the
peak resident set size. It
prints the rise, which is what the volume costs, against the raw int16 volume, and the baseline
(Python, torch and the model). Before that it measures, the same way, what one forward pass of the
network on one window batch needs by itself (activations, oneDNN scratch): that is the model's
share. The issue's target: peak <= 3 x the raw volume + the model, i.e. (rise - forward pass) <= 3 x raw.

    python benchmarks/segment_memory.py                      # 512 x 512 x 300, window 32 x 128 x 128
    python benchmarks/segment_memory.py --size 300,512,512 --window 32,128,128 --overlap 0.5
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Linux: /proc/self/status's VmRSS (now) and VmHWM (peak), the peak reset through /proc/self/clear_refs
# after the model is loaded (ru_maxrss cannot be reset, and a child inherits its parent's at fork).
CHILD = r"""
import json, sys, time
def status(key):
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key + ":")) / 1024
from pgl_zoo.api import load_segmentation_model
from pgl_zoo.inference import segment_files
root, overlap, batch = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
network, card = load_segmentation_model(root + "/model")
def reset_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return status("VmRSS")
import torch
before = reset_peak()
with torch.inference_mode():  # what the network alone needs for one window batch (activations, oneDNN)
    network.eval()(torch.zeros(batch, 1, *card.patch_size_zyx))
forward_mib = status("VmHWM") - before
baseline = reset_peak()
started = time.perf_counter()
segment_files([root + "/ct.nrrd"], root + "/label.nrrd", (network, card), overlap=overlap, sw_batch_size=batch,
              progress=False)
seconds = time.perf_counter() - started
print(json.dumps({"baseline_mib": baseline, "peak_mib": status("VmHWM"), "forward_mib": forward_mib,
                  "seconds": seconds}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="300,512,512", help="volume Z,Y,X")
    parser.add_argument("--window", default="32,128,128", help="sliding window Z,Y,X")
    parser.add_argument("--overlap", type=float, default=0.0)
    parser.add_argument("--sw-batch-size", type=int, default=1)
    parser.add_argument("--classes", type=int, default=3)
    args = parser.parse_args()

    import numpy as np
    import SimpleITK as sitk
    import torch

    from pgl_zoo.arch import resenc_arch
    from pgl_zoo.cards import NOT_PUBLISHED, ModelCard, Preprocessing
    from pgl_zoo.finetune.export import export_segmentation_model
    from pgl_zoo.nets import build_unet

    arch = resenc_arch([8, 16, 32], [1, 1, 1], [[1, 1, 1], [2, 2, 2], [2, 2, 2]])
    shape = tuple(int(s) for s in args.size.split(","))
    window = tuple(int(s) for s in args.window.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        array = np.random.default_rng(0).normal(-300, 300, shape).astype(np.int16)
        raw_mib = array.nbytes / 2**20
        sitk.WriteImage(sitk.GetImageFromArray(array), str(root / "ct.nrrd"), False)
        del array
        torch.manual_seed(0)
        card = ModelCard(name="mem", summary="benchmark", status=NOT_PUBLISHED, arch=arch, modality="CT",
                         preprocessing=Preprocessing(spacing_xyz_mm=None, window=(-1024.0, 325.0),
                                                     normalization="zscore"), patch_size_zyx=window)
        export_segmentation_model(build_unet(arch, num_classes=args.classes).state_dict(), card, args.classes,
                                  root / "model")
        started = time.perf_counter()
        run = subprocess.run([sys.executable, "-c", CHILD, str(root), str(args.overlap), str(args.sw_batch_size)],
                             capture_output=True, text=True)
        if run.returncode:
            sys.exit(run.stderr)
        wall = time.perf_counter() - started
        result = json.loads(run.stdout.strip().splitlines()[-1])
    rise, forward = result["peak_mib"] - result["baseline_mib"], result["forward_mib"]
    print(f"volume {'x'.join(map(str, shape))} int16: {raw_mib:.0f} MiB raw; window {args.window}, overlap "
          f"{args.overlap}, window batch {args.sw_batch_size}, {args.classes} classes, native spacing")
    print(f"peak RSS {result['peak_mib']:.0f} MiB = baseline {result['baseline_mib']:.0f} MiB (Python, torch, loaded "
          f"model) + rise {rise:.0f} MiB; the network's forward pass on one window batch alone: {forward:.0f} MiB")
    beyond = rise - forward
    print(f"rise beyond the forward pass / raw volume = {beyond / raw_mib:.2f} (target <= 3.0: "
          f"{'met' if beyond <= 3 * raw_mib else 'missed'}); rise / raw volume = {rise / raw_mib:.2f}; "
          f"segment_files {result['seconds']:.0f} s, process {wall:.0f} s")


if __name__ == "__main__":
    main()
