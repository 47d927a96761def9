"""Pretrain the tiny PGL network on a folder of CT scans, export it, and load the encoder back.

    python examples/pretrain_tiny.py ../shared/data/ct runs/example --steps 50

The same as ``pgl-zoo pretrain --data CT --out RUN --steps 50 && pgl-zoo export RUN --name ... --out ...``.
A CPU is enough for this demonstration (patch 16x32x32, batch 2); use the card's default patch
(32x64x64) and more steps for real use, and ``torchrun --nproc_per_node=N`` for several GPUs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import pgl_zoo
from pgl_zoo.pretrain import PretrainConfig, export_run, pretrain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", help="folder of CT scans (NIfTI, NRRD, MHA, DICOM series)")
    parser.add_argument("run", help="run folder to create")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--local-weight", type=float, default=1.0, help="0 gives the BYOL baseline")
    args = parser.parse_args()

    config = PretrainConfig(data=[args.data], out=args.run, model="pgl-ct-tiny", patch_size=(16, 32, 32),
                            batch_size=2, steps=args.steps, local_weight=args.local_weight, non_hu="rescale",
                            checkpoint_every=25)
    result = pretrain(config)
    print(f"final losses after {result.step} steps: {result.final_losses}")

    folder = export_run(args.run, name="pgl-ct-tiny-example", out_dir=Path(args.run) / "export")
    encoder = pgl_zoo.load_pgl_encoder(str(folder))
    features = encoder(torch.zeros(1, 1, 16, 32, 32))
    print(f"exported to {folder}; encoder feature shapes: {[tuple(f.shape) for f in features]}")


if __name__ == "__main__":
    main()
