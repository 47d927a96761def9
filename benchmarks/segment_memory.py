"""Peak memory of ``pgl-zoo segment`` on one large CT-sized volume (default 512 x 512 x 300 int16).

Writes a synthetic int16 volume (uncompressed NRRD) and a small, randomly initialised segmentation
network (native spacing, so the network sees the full grid), then runs ``pgl-zoo segment`` in a fresh
process and prints that process's peak resident set size (ru_maxrss of the child) and its ratio to
the raw volume's size. The network is tiny so that the volume, not the activations, dominates.

    OMP_NUM_THREADS=1 python benchmarks/segment_memory.py            # 512,512,300
    python benchmarks/segment_memory.py --size 300,512,512 --window 32,128,128
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from pgl_zoo.architecture import resenc_arch

ARCH = resenc_arch([8, 16, 32], [1, 1, 1], [[1, 1, 1], [2, 2, 2], [2, 2, 2]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="300,512,512", help="volume Z,Y,X")
    parser.add_argument("--window", default="32,128,128", help="sliding window Z,Y,X")
    args = parser.parse_args()
    from pgl_zoo.cards import NOT_PUBLISHED, ModelCard, Preprocessing
    from pgl_zoo.finetune.export import export_segmentation_model
    from pgl_zoo.nets import build_unet

    shape = tuple(int(s) for s in args.size.split(","))
    window = tuple(int(s) for s in args.window.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        array = (np.random.default_rng(0).normal(-300, 300, shape)).astype(np.int16)
        raw_mib = array.nbytes / 2**20
        sitk.WriteImage(sitk.GetImageFromArray(array), str(root / "ct.nrrd"), False)
        del array
        torch.manual_seed(0)
        card = ModelCard(name="mem", summary="benchmark", status=NOT_PUBLISHED, arch=ARCH, modality="CT",
                         preprocessing=Preprocessing(spacing_xyz_mm=None, window=(-1024.0, 325.0),
                                                     normalization="zscore"), patch_size_zyx=window)
        export_segmentation_model(build_unet(ARCH, num_classes=3).state_dict(), card, 3, root / "model")
        started = time.perf_counter()
        run = subprocess.run([sys.executable, "-m", "pgl_zoo.cli", "segment", str(root / "ct.nrrd"), "-o",
                              str(root / "label.nrrd"), "--model", str(root / "model"), "--overlap", "0",
                              "--sw-batch-size", "1", "--no-progress"], capture_output=True, text=True,
                             env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
        seconds = time.perf_counter() - started
        if run.returncode:
            sys.exit(run.stderr)
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(f"volume {'x'.join(map(str, shape))} int16 ({raw_mib:.0f} MiB), window {args.window}, 3 classes: "
              f"segment peak RSS {peak_mib:.0f} MiB ({peak_mib / raw_mib:.1f}x the raw volume), {seconds:.0f} s")


if __name__ == "__main__":
    main()
