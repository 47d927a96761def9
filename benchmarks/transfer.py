"""Transfer study: does PGL pretraining beat random initialisation and the BYOL baseline?

On the MSD hippocampus MRI set in ``../shared/data/mri/hippocampus`` (real manual labels):

* a fixed split, drawn once with ``numpy.random.default_rng(SPLIT_SEED)`` over the sorted case
  names: ``--test-cases`` cases for testing, the rest the pretraining pool (images only);
  the first K cases of the pool's shuffled order are the labelled fine-tuning cases (nested:
  the 5 are among the 20);
* three arms with the same tiny architecture, budget and schedule: ``scratch`` (random
  initialisation), ``byol`` (pretrained with local weight 0) and ``pgl`` (local weight 1);
  each pretraining runs once (seed 0) on the pool; each fine-tuning runs for every seed;
* fine-tuning has a fixed number of steps and is scored on the test cases after the last step
  (no checkpoint selection on the test set): Dice per class (anterior, posterior) and their mean.

Output in ``--out`` (default ``benchmarks/results``): ``transfer.json`` (every run),
``transfer.md`` (Dice mean +- std over seeds per arm, class and K) and ``transfer.png``.
Runs already finished in ``--work`` are reused, so an interrupted study continues where it stopped.

    python benchmarks/transfer.py                 # the full study (about 45 min on 2 idle CPU cores)
    python benchmarks/transfer.py --quick         # a smoke run of every step (about a minute)
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

SPLIT_SEED = 2020
ARMS = {"scratch": None, "byol": 0.0, "pgl": 1.0}  # arm -> pretraining local weight
CLASSES = ("anterior", "posterior")
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mri" / "hippocampus"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="MSD hippocampus folder (imagesTr, labelsTr)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--work", type=Path, default=Path("runs/transfer"), help="run folders (reused)")
    parser.add_argument("--test-cases", type=int, default=30)
    parser.add_argument("--ks", default="5,20", help="labelled fine-tuning cases, comma-separated")
    parser.add_argument("--seeds", default="0,1,2", help="fine-tuning seeds, comma-separated")
    parser.add_argument("--pretrain-steps", type=int, default=500)
    parser.add_argument("--pretrain-batch", type=int, default=8)
    parser.add_argument("--pretrain-patch", default="24,32,24", help="z,y,x voxels")
    parser.add_argument("--local-levels", default=None, help="decoder levels of the local loss (default: coarsest)")
    parser.add_argument("--finetune-steps", type=int, default=200)
    parser.add_argument("--finetune-epochs", type=int, default=1, help="the steps are split into these epochs")
    parser.add_argument("--finetune-batch", type=int, default=4)
    parser.add_argument("--finetune-patch", default="32,48,32", help="z,y,x voxels")
    parser.add_argument("--lr", type=float, default=1e-3, help="fine-tuning peak learning rate")
    parser.add_argument("--pretrain-workers", type=int, default=None, help="data processes (default: per CPU)")
    parser.add_argument("--pool-size", type=int, default=None, help="cap the pretraining pool (default: all)")
    parser.add_argument("--quick", action="store_true", help="tiny budget and few cases: proves the script runs")
    args = parser.parse_args(argv)
    if args.quick:
        args.test_cases, args.ks, args.seeds, args.pool_size, args.pretrain_workers = 2, "2", "0", 6, 0
        args.pretrain_steps, args.pretrain_batch, args.pretrain_patch = 2, 2, "16,16,16"
        args.finetune_steps, args.finetune_epochs, args.finetune_batch, args.finetune_patch = 2, 1, 2, "16,16,16"
    return args


def triple(text: str) -> tuple[int, int, int]:
    values = tuple(int(v) for v in text.split(","))
    assert len(values) == 3, text
    return values  # type: ignore[return-value]


def make_split(data: Path, test_cases: int, pool_size: int | None) -> dict[str, list[str]]:
    from pgl_zoo.finetune.data import find_cases

    names = [c.name for c in find_cases(data)]
    order = np.random.default_rng(SPLIT_SEED).permutation(len(names))
    shuffled = [names[i] for i in order]
    test, pool = sorted(shuffled[:test_cases]), shuffled[test_cases:]
    if pool_size:
        pool = pool[:pool_size]
    return {"test": test, "pool": pool}


def mri_card(args: argparse.Namespace, path: Path) -> Path:
    """The card used for pretraining on MRI: pgl-ct-tiny's architecture, native 1 mm, z-score, no window."""
    import pgl_zoo
    from pgl_zoo.cards import Preprocessing

    card = pgl_zoo.get_card("pgl-ct-tiny").replace(
        name="pgl-mri-hippocampus-tiny",
        summary="Tiny residual 3D U-Net encoder pretrained on hippocampus T1 MRI crops (transfer study).",
        modality="MRI",
        preprocessing=Preprocessing(spacing_xyz_mm=None, orientation="LPS", window=None, normalization="zscore"),
        patch_size_zyx=triple(args.pretrain_patch),
        license="CC BY-SA 4.0",
        training={"recipe": "python benchmarks/transfer.py"},
        notes="Trained by benchmarks/transfer.py on the MSD Task04 hippocampus training images (CC BY-SA 4.0).",
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(card.to_json())
    return path


def pretrain_arm(arm: str, args, split, card_file: Path) -> tuple[Path, dict]:
    from pgl_zoo.pretrain import PretrainConfig, export_run, pretrain

    run = args.work / f"pretrain-{arm}"
    exported = args.work / f"encoder-{arm}"
    summary_file = run / "summary.json"
    started = time.perf_counter()
    done = summary_file.is_file() and json.loads(summary_file.read_text()).get("step") == args.pretrain_steps
    if not done:
        images = [str(args.data / "imagesTr" / f"{name}.nii.gz") for name in split["pool"]]
        levels = tuple(int(v) for v in args.local_levels.split(",")) if args.local_levels else None
        pretrain(PretrainConfig(
            data=images, out=str(run), model=str(card_file), patch_size=triple(args.pretrain_patch),
            batch_size=args.pretrain_batch, steps=args.pretrain_steps, local_weight=ARMS[arm], local_levels=levels,
            non_hu="keep", seed=0, workers=args.pretrain_workers, checkpoint_every=max(50, args.pretrain_steps // 4),
            resume=(run / "checkpoint.pt").is_file(), cache_dir=str(args.work / "cache"), device="cpu",
        ))
    export_run(run, f"pgl-mri-hippocampus-tiny-{arm}", exported)
    summary = json.loads(summary_file.read_text())
    return exported, {"arm": arm, "steps": summary.get("step"), "final_losses": summary.get("final_losses"),
                      "wall_s": round(time.perf_counter() - started, 1), "reused": done}


def finetune_run(arm: str, k: int, seed: int, args, split, encoder: Path | None, arch: Path) -> dict:
    from pgl_zoo.finetune import FinetuneConfig, finetune

    run = args.work / f"finetune-{arm}-k{k}-s{seed}"
    record_file = run / "study_record.json"
    if record_file.is_file():
        return json.loads(record_file.read_text())
    started = time.perf_counter()
    result = finetune(FinetuneConfig(
        out=run, num_classes=3, data=args.data, train_cases=split["pool"][:k], val_cases=split["test"],
        encoder=encoder, architecture=arch, label_names={"0": "background", "1": CLASSES[0], "2": CLASSES[1]},
        spacing_xyz_mm="native", window="none", normalization="zscore", modality="MRI",
        patch_size_zyx=triple(args.finetune_patch), epochs=args.finetune_epochs,
        steps_per_epoch=max(1, args.finetune_steps // args.finetune_epochs), batch_size=args.finetune_batch,
        lr=args.lr, seed=seed, progress=False, device="cpu",
    ))
    record = {
        "arm": arm, "k": k, "seed": seed, "test_dice": result.final_dice, "test_mean_dice": result.final_mean_dice,
        "wall_s": round(time.perf_counter() - started, 1), "history": result.history,
    }
    record_file.write_text(json.dumps(record, indent=2, default=float))
    return record


def mean_std(values: list[float]) -> str:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return "n/a"
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1) if len(values) > 1 else 0.0:.3f}"


def write_table(records: list[dict], meta: dict, path: Path) -> str:
    ks = sorted({r["k"] for r in records})
    lines = [
        "| K labelled | arm | mean Dice | anterior | posterior | seeds |",
        "|---|---|---|---|---|---|",
    ]
    for k in ks:
        for arm in ARMS:
            runs = [r for r in records if r["k"] == k and r["arm"] == arm]
            if not runs:
                continue
            lines.append(
                f"| {k} | {arm} | {mean_std([r['test_mean_dice'] for r in runs])} | "
                f"{mean_std([r['test_dice'].get(CLASSES[0]) for r in runs])} | "
                f"{mean_std([r['test_dice'].get(CLASSES[1]) for r in runs])} | {len(runs)} |"
            )
    table = "\n".join(lines)
    text = (
        f"# Transfer study: hippocampus MRI ({meta['test_cases']} test cases)\n\n{table}\n\n"
        f"Dice on the test cases after the last fine-tuning step, mean ± sample std over seeds.\n\n"
        f"Command: `{meta['command']}`  \nWall time: {meta['wall_s'] / 60:.1f} min on {meta['machine']}.  \n"
        f"Pretraining: {json.dumps(meta['pretraining'])}\n"
    )
    path.write_text(text)
    return table


def write_plot(records: list[dict], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot", file=sys.stderr)
        return
    ks = sorted({r["k"] for r in records})
    fig, ax = plt.subplots(figsize=(6, 4))
    width = 0.25
    for i, arm in enumerate(ARMS):
        means, stds = [], []
        for k in ks:
            values = [r["test_mean_dice"] for r in records if r["k"] == k and r["arm"] == arm]
            means.append(np.mean(values) if values else np.nan)
            stds.append(np.std(values, ddof=1) if len(values) > 1 else 0.0)
        ax.bar(np.arange(len(ks)) + (i - 1) * width, means, width, yerr=stds, capsize=4, label=arm)
    ax.set_xticks(np.arange(len(ks)), [f"K = {k}" for k in ks])
    ax.set_ylabel("test Dice (mean of 2 classes)")
    ax.set_title("Hippocampus MRI: initialisation vs labelled cases")
    ax.set_ylim(0, 1)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    started = time.perf_counter()
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    split = make_split(args.data, args.test_cases, args.pool_size)
    card_file = mri_card(args, args.work / "mri-card.json")
    encoders, pretraining = {}, []
    for arm in ("byol", "pgl"):
        encoders[arm], info = pretrain_arm(arm, args, split, card_file)
        pretraining.append(info)
        print(f"pretrained {arm}: {info}", flush=True)
    records = []
    for k in (int(v) for v in args.ks.split(",")):
        for seed in (int(v) for v in args.seeds.split(",")):
            for arm in ARMS:
                record = finetune_run(arm, k, seed, args, split, encoders.get(arm), encoders["pgl"])
                records.append(record)
                print(f"K={k} seed={seed} {arm}: test Dice {record['test_mean_dice']:.3f} {record['test_dice']}",
                      flush=True)
    meta = {
        "command": "python benchmarks/transfer.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "wall_s": round(time.perf_counter() - started, 1),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "test_cases": len(split["test"]),
        "split": split,
        "split_seed": SPLIT_SEED,
        "settings": {k: str(v) for k, v in vars(args).items()},
        "pretraining": pretraining,
    }
    suffix = "-quick" if args.quick else ""
    (args.out / f"transfer{suffix}.json").write_text(json.dumps({"meta": meta, "runs": records}, indent=2,
                                                                default=float))
    table = write_table(records, meta, args.out / f"transfer{suffix}.md")
    write_plot(records, args.out / f"transfer{suffix}.png")
    print(table)
    return {"meta": meta, "runs": records}


if __name__ == "__main__":
    main()
