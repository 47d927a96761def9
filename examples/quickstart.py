"""The main job, end to end, offline: pretrained encoder -> fine-tuned organ segmentation -> a real CT.

    python examples/quickstart.py --out quickstart/

1. loads the PGL encoder bundled with the package (``pgl-ct-tiny``; sha256 verified, no network);
2. builds a two-case labelled set from the TotalSegmentator example CT (``example_ct_sm``, 30 slices
   at 3 mm) and its organ map: liver, spleen, kidneys. The two cases are the lower and upper halves
   of that scan: one trains, the other validates;
3. fine-tunes a segmentation U-Net on that encoder (``pgl_zoo.finetune``);
4. segments the full 112-slice CT of the same patient (``example_ct``), writes the label map with
   the input's exact geometry, and a PNG preview of three orthogonal slices.

A demonstration on one patient, not a validated organ model: the labels are TotalSegmentator's
output (not drawn by hand), and the scan segmented in step 4 contains the training slices.
Takes a few minutes on a laptop CPU. Data: ``../shared/data`` beside the checkout, or ``--data``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

import pgl_zoo
from pgl_zoo.finetune import FinetuneConfig, finetune
from pgl_zoo.finetune.data import CasePair
from pgl_zoo.imaging import read_image, write_image
from pgl_zoo.inference import segment_files

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ct" / "totalseg_patient_a"
# TotalSegmentator class ids (example_seg_labels.json) -> our classes
ORGANS = {1: ("liver", (5,)), 2: ("spleen", (1,)), 3: ("kidneys", (2, 3))}


def make_cases(data: Path, work: Path) -> list[CasePair]:
    """Two labelled cases: the lower and upper halves (along z) of example_ct_sm, organs remapped."""
    image = read_image(data / "example_ct_sm.nii.gz")
    segmentation = read_image(data / "example_seg.nii.gz")
    source = sitk.GetArrayFromImage(segmentation)
    remapped = np.zeros(source.shape, np.uint8)
    for ours, (_, theirs) in ORGANS.items():
        remapped[np.isin(source, theirs)] = ours
    label = sitk.GetImageFromArray(remapped)
    label.CopyInformation(segmentation)
    half = image.GetSize()[2] // 2
    cases = []
    for name, zs in (("lower", slice(0, half)), ("upper", slice(half, image.GetSize()[2]))):
        image_path = write_image(image[:, :, zs], work / "imagesTr" / f"{name}.nii.gz")
        label_path = write_image(label[:, :, zs], work / "labelsTr" / f"{name}.nii.gz")
        cases.append(CasePair(name, image_path, label_path))
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("quickstart"), help="output folder")
    parser.add_argument("--data", type=Path, default=DATA, help="folder with example_ct*.nii.gz, example_seg.nii.gz")
    parser.add_argument("--encoder", default="pgl-ct-tiny", help="zoo encoder, a folder, or 'none' (from scratch)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--steps-per-epoch", type=int, default=25)
    args = parser.parse_args()
    started = time.perf_counter()
    if not (args.data / "example_ct.nii.gz").is_file():
        raise SystemExit(f"error: {args.data}: example CT not found; pass --data FOLDER")

    if args.encoder != "none":
        encoder = pgl_zoo.load_pgl_encoder(args.encoder)
        print(f"1. encoder {args.encoder}: {encoder.load_report.summary()}")
    cases = make_cases(args.data, args.out / "data")
    print(f"2. labelled cases: {', '.join(c.name for c in cases)} (classes: "
          f"{', '.join(name for name, _ in ORGANS.values())})")
    result = finetune(FinetuneConfig(
        out=args.out / "run", num_classes=len(ORGANS) + 1, cases=cases, train_cases=["lower"], val_cases=["upper"],
        encoder=None if args.encoder == "none" else args.encoder, architecture="pgl-ct-tiny",
        label_names={"0": "background", **{str(k): name for k, (name, _) in ORGANS.items()}},
        epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, batch_size=2, foreground_probability=0.5,
        seed=0, progress=True, name="quickstart-organs",
    ))
    dice = ", ".join(f"{k} {v:.2f}" for k, v in result.final_dice.items())
    print(f"3. fine-tuned: Dice on the held-out upper half after the last epoch: {dice}")
    label_path = args.out / "example_ct_labels.nii.gz"
    preview = args.out / "preview.png"
    segment_files([args.data / "example_ct.nii.gz"], label_path, result.model_dir, preview=preview, progress=False)
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(label_path)))
    counts = {name: int((labels == k).sum()) for k, (name, _) in ORGANS.items()}
    summary = {"label_map": str(label_path), "preview": str(preview), "model": str(result.model_dir),
               "final_val_dice": result.final_dice, "voxels_per_class": counts,
               "minutes": round((time.perf_counter() - started) / 60, 1)}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"4. segmented example_ct.nii.gz -> {label_path} (voxels per class: {counts})")
    print(f"   preview: {preview}   model: {result.model_dir}   ({summary['minutes']} min)")


if __name__ == "__main__":
    main()
