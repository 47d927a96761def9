"""Fine-tune on the MSD hippocampus MRI set, segment a held-out case and score it (runs on a CPU).

    python examples/finetune_hippocampus.py [--encoder pgl-ct-tiny|PATH|none] [--out runs/hippocampus] [--data DIR]

The data: the MSD Task04_Hippocampus folder (imagesTr/, labelsTr/); by default
$PGL_ZOO_DATA/mri/hippocampus, else ../shared/data/mri/hippocampus beside the checkout.

The CT card's preprocessing is overridden for MRI: native ~1 mm spacing, no HU window, z-score.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import SimpleITK as sitk

from pgl_zoo.finetune import FinetuneConfig, finetune
from pgl_zoo.imaging import read_image
from pgl_zoo.inference import segment_files
from pgl_zoo.metrics import dice_per_class

SHARED = Path(os.environ.get("PGL_ZOO_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
DATA = SHARED / "mri" / "hippocampus"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="none", help="zoo encoder name or folder, or 'none' (from scratch)")
    parser.add_argument("--out", default="runs/hippocampus")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--data", type=Path, default=DATA, help=f"an MSD-layout folder (default: {DATA})")
    args = parser.parse_args()
    data = args.data
    result = finetune(FinetuneConfig(
        data=data, out=args.out, num_classes=3, encoder=args.encoder, arch_from="pgl-ct-tiny",
        spacing_xyz_mm="native", window="none", normalization="zscore", modality="MRI",
        patch_size_zyx=(32, 48, 32), epochs=args.epochs, steps_per_epoch=25, batch_size=2,
        label_names={"0": "background", "1": "anterior", "2": "posterior"},
    ))
    print("best validation Dice:", result.best_dice)
    held_out = result.run_dir / "model"  # the exported model records its validation cases in card.json
    name = json.loads((held_out / "card.json").read_text())["training"]["val_cases"][0]
    out = Path(args.out) / "predictions"
    [label] = segment_files([data / "imagesTr" / f"{name}.nii.gz"], out, result.run_dir, preview=out / "preview.png")
    read = lambda path: sitk.GetArrayFromImage(read_image(path))  # noqa: E731
    print(name, dice_per_class(read(label), read(data / "labelsTr" / f"{name}.nii.gz"), 3))


if __name__ == "__main__":
    main()
