"""Transfer study v3: does PGL help on head-and-neck organs at risk (OpenKBP, 242 planning CTs)?

Stages (each resumable; a finished job is reused, an interrupted one continues from its checkpoint):

``pretrain``
    The pretraining arms, run one after another through ``pgl-zoo pretrain`` with identical data,
    steps, batch, seed and network (the ``pgl-ct`` architecture, ``transfer_v3/study_card.json``):
    ``pgl`` (project defaults: local weight 1, coarsest decoder level), ``byol`` (local weight 0)
    and the diagnostic ``shuffled`` (local loss on permuted positions; shorter). Pool: the images of
    OpenKBP's training and validation patients (labels unused) plus every other real-HU CT under
    ``../shared/data/ct`` (label maps and non-HU scans are skipped by the pretraining data checks);
    OpenKBP's test patients are never in it (asserted).

Preprocessing of the study (pretraining and fine-tuning alike): LPS, 4 x 4 x 3 mm (x, y, z), HU
window [-250, 350] mapped to [0, 1]. This is an assumption made before the validation measurement
that the issue asks for (the data's own grid is 3.5-5.5 mm in-plane, 2-3.5 mm between slices; the
window is the one that learned in the issue's from-scratch measurement); the fine-tuning recipe is
measured on the validation patients and recorded in the results.

    python benchmarks/transfer_hn.py pretrain --runs /work/runs/v3 --steps 500 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("PGL_ZOO_DATA", HERE.parents[1] / "shared" / "data"))
OPENKBP = SHARED / "ct" / "openkbp_hn"
STUDY_CARD = HERE / "transfer_v3" / "study_card.json"
ORGANS = ("Brainstem", "SpinalCord", "RightParotid", "LeftParotid", "Esophagus", "Larynx", "Mandible")
# Real-HU CT beside OpenKBP (ct/not_hu is not in HU; ct/tiny_dicom has non-uniform slice spacing).
OTHER_CT = ("lctsc_lungs/imagesTr", "more", "totalseg_patient_a", "chest_dicom_series", "liver_3slice_dicom/dicom")
ARMS = {
    "pgl": ["--local-weight", "1.0"],
    "byol": ["--local-weight", "0"],
    "shuffled": ["--local-weight", "1.0", "--local-control", "shuffled"],
}


def openkbp_split() -> dict[str, list[str]]:
    """OpenKBP's own split of the cases here: {"train": [...], "validation": [...], "test": [...]}, sorted."""
    structures = json.loads((OPENKBP / "structures.json").read_text())
    out: dict[str, list[str]] = {"train": [], "validation": [], "test": []}
    for case, info in sorted(structures.items()):
        out[info["openkbp_split"].removesuffix("-pats")].append(case)
    return out


def pool_folder(runs: Path) -> Path:
    """A folder of links to the OpenKBP training and validation images (the test patients left out)."""
    split = openkbp_split()
    folder = runs / "openkbp_pool"
    folder.mkdir(parents=True, exist_ok=True)
    wanted = {f"{c}.nii.gz" for c in split["train"] + split["validation"]}
    for name in sorted(wanted):
        link = folder / name
        if not link.exists():
            link.symlink_to(OPENKBP / "imagesTr" / name)
    present = {p.name for p in folder.iterdir()}
    test = {f"{c}.nii.gz" for c in split["test"]}
    if present & test or present != wanted:
        raise SystemExit(f"{folder}: holds other files than the training and validation images")
    return folder


def pretrain_args(runs: Path) -> list[str]:
    args = ["--data", str(pool_folder(runs))]
    for rel in OTHER_CT:
        args += ["--data", str(SHARED / "ct" / rel)]
    return args


def run_pretraining(runs: Path, steps: int, shuffled_steps: int, batch: int, threads: int, arms: list[str],
                    checkpoint_every: int) -> None:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    for arm in arms:
        out = runs / "pretrain" / arm
        arm_steps = shuffled_steps if arm == "shuffled" else steps
        summary = out / "summary.json"
        if summary.exists() and json.loads(summary.read_text()).get("step") == arm_steps:
            print(f"{arm}: finished ({arm_steps} steps), reused", flush=True)
            continue
        cmd = [sys.executable, "-m", "pgl_zoo.cli", "pretrain", "--out", str(out)]
        if (out / "checkpoint.pt").exists():
            cmd += ["--resume", "--workers", "1"]
        else:
            cmd += [*pretrain_args(runs), "--model", str(STUDY_CARD), "--steps", str(arm_steps),
                    "--batch-size", str(batch), "--seed", "0", "--workers", "1",
                    "--checkpoint-every", str(checkpoint_every), "--cache-dir", str(runs / "cache"), *ARMS[arm]]
        print(" ".join(cmd), flush=True)
        subprocess.run(cmd, env=env, check=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="stage", required=True)
    p = sub.add_parser("pretrain", help="run (or resume) the pretraining arms, one after another")
    p.add_argument("--runs", type=Path, required=True, help="study work folder (run folders, cache, features)")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--shuffled-steps", type=int, default=250)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--arms", default="pgl,byol,shuffled")
    p.add_argument("--checkpoint-every", type=int, default=25)
    args = parser.parse_args(argv)
    if args.stage == "pretrain":
        run_pretraining(args.runs, args.steps, args.shuffled_steps, args.batch_size, args.threads,
                        args.arms.split(","), args.checkpoint_every)


if __name__ == "__main__":
    main()
