"""Transfer study v3, fine-tuning half: the recipe measured on validation patients, then full fine-tuning.

The probe half (frozen encoders, K in 1..20) is ``benchmarks/transfer_hn.py``, whose pretraining runs,
subsets and helpers this file reuses. Every run here is ``pgl-zoo finetune`` as a user runs it (the
partial-label loss through ``--labelled-classes structures.json``), then ``pgl-zoo segment`` on the test
patients and ``pgl_zoo.evaluate`` with the same partial labels (an organ nobody contoured is not scored).

Stages (each resumable: a run continues from its checkpoint, a finished one is reused):

``recipe``
    Each candidate of ``RECIPES`` (spacing, window and normalisation, patch) trained from scratch on the
    K = 5 subset 0 of the probe half for ``RECIPE_EPOCHS`` x ``STEPS_PER_EPOCH`` steps, validated after
    every epoch on ``VAL_CASES`` of OpenKBP's validation patients (the first of them in sorted order).
    The candidate with the best validation mean Dice is the recipe of the ``finetune`` stage. Its result is
    recorded in the work folder's ``finetune/recipe.json``; the study's own result (2026-12-06) is committed
    as ``benchmarks/transfer_v3/recipe.json``, which ``finetune`` reads where the work folder has none.

``finetune --arm A [--subset S]``
    Arm A (``random``: the study architecture from scratch; ``byol``/``pgl``: the exported pretraining
    runs, exported once into ``RUNS/encoders/ARM``; the study's exports are committed in
    ``benchmarks/transfer_v3/encoders/ARM`` and used where the work folder has neither) fine-tuned with the
    chosen recipe on the K = 5 subset S (all of ``FT_SUBSETS`` without
    ``--subset``) for ``--epochs`` x ``STEPS_PER_EPOCH`` steps, the epoch with the best validation Dice
    kept (``pgl-zoo finetune``'s ``model/``), then scored on the 39 test patients. ``--epochs`` other than
    the study's ``FT_EPOCHS`` is a schedule check: its run lives apart (``finetune/A/sS_NNNNsteps``, record
    ``A_sS_NNNNsteps.json``) and is reported beside the study's runs, never paired with them.

``report``
    Validation curves of every run (and the step each organ switched on), test Dice per arm and subset, the
    paired differences (PGL - random, PGL - BYOL, BYOL - random) with 95 % bootstrap intervals over the
    training subsets and, two-level, over the subsets and the test patients (``transfer.two_level_interval``):
    ``benchmarks/results/transfer_v3_finetune.{json,md}`` and ``transfer_v3_finetune_curves.png``. Each
    finished run of the work folder is first recorded in ``benchmarks/results/transfer_v3_finetune_runs/``
    (per-patient test Dice and the validation curve; committed), and the report reads those records: runs
    of earlier sessions on other machines count.

``--quick``: one epoch of 2 steps, one validation and one test patient, sliding windows without overlap,
one candidate, arms random and pgl (tests/test_transfer_hn.py runs it after the probe half's quick stages).

    python benchmarks/transfer_hn_finetune.py recipe --runs /work/runs/v3
    python benchmarks/transfer_hn_finetune.py finetune --runs /work/runs/v3 --arm random
    python benchmarks/transfer_hn_finetune.py report --runs /work/runs/v3 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import transfer_hn as study  # noqa: E402 - benchmarks/transfer_hn.py: pretraining runs, subsets, helpers

# Candidates measured from scratch on the validation patients; "study" is the probe half's preprocessing.
RECIPES = {
    "study": {"spacing": "4,4,3", "window": "-250,350", "normalization": "minmax", "patch": "32,64,64"},
    "study-patch48": {"spacing": "4,4,3", "window": "-250,350", "normalization": "minmax", "patch": "48,64,64"},
    "native-patch48": {"spacing": "native", "window": "-250,350", "normalization": "minmax", "patch": "48,64,64"},
    "card-window": {"spacing": "4,4,3", "window": "-1024,325", "normalization": "zscore", "patch": "32,64,64"},
}
FT_ARMS = ("random", "byol", "pgl")
FT_K = 5
FT_SUBSETS = 3
STEPS_PER_EPOCH = 50
RECIPE_EPOCHS = 6  # 300 steps: the issue's own from-scratch measurement
FT_EPOCHS = 24  # 1,200 steps; the validation curves show whether the random arm has converged
VAL_CASES = 8
BATCH = 2
RECIPE_RECORD = HERE / "transfer_v3" / "recipe.json"  # the recipe stage's result, committed
COMMITTED_ENCODERS = HERE / "transfer_v3" / "encoders"  # the byol and pgl runs' exports, committed
RESULTS = HERE / "results"  # the report and its run records (--out)


@dataclass(frozen=True)
class Plan:
    """The sizes of one run of this half (the full one, or ``--quick``)."""

    recipes: tuple[str, ...] = tuple(RECIPES)
    arms: tuple[str, ...] = FT_ARMS
    subsets: int = FT_SUBSETS
    steps_per_epoch: int = STEPS_PER_EPOCH
    recipe_epochs: int = RECIPE_EPOCHS
    epochs: int = FT_EPOCHS  # the fine-tunes' schedule, the one the arms are compared on
    val_cases: int = VAL_CASES
    test_cases: int | None = None  # None: all 39
    overlap: float = 0.5  # sliding-window overlap of validation and test segmentation (pgl-zoo's default)

    @property
    def steps(self) -> int:
        """The fine-tunes' schedule in steps (``epochs`` x ``steps_per_epoch``)."""
        return self.epochs * self.steps_per_epoch


# Overlap 0: a quarter of the windows (validation and the test patient's segmentation take most of a quick run).
QUICK = Plan(recipes=("study",), arms=("random", "pgl"), subsets=1, steps_per_epoch=2,
             recipe_epochs=1, epochs=1, val_cases=1, test_cases=1, overlap=0.0)


def run_label(subset: int, epochs: int, plan: Plan) -> str:
    """A fine-tune's folder and record name: ``s{subset}`` on the plan's schedule, ``s{subset}_{N}steps`` on
    another (a schedule check, kept apart so that it never resumes or replaces the study's run)."""
    return f"s{subset}" if epochs == plan.epochs else f"s{subset}_{epochs * plan.steps_per_epoch}steps"


_RUN_LABEL = re.compile(r"s(\d+)(?:_(\d+)steps)?")


def validation_cases(plan: Plan) -> list[str]:
    return study.openkbp_split()["validation"][: plan.val_cases]


def train_cases(plan: Plan, subset: int, quick: bool) -> list[str]:
    budget = study.QUICK if quick else study.Budget()
    return study.subsets(budget, 2 if quick else FT_K)[subset]


def case_folder(runs: Path, name: str, cases: list[str]) -> Path:
    """A folder of links ``images/`` and ``labels/`` to the given OpenKBP cases (what segment and evaluate read)."""
    folder = runs / "finetune" / name
    for kind, source in (("images", "imagesTr"), ("labels", "labelsTr")):
        (folder / kind).mkdir(parents=True, exist_ok=True)
        for case in cases:
            link = folder / kind / f"{case}.nii.gz"
            if not link.exists():
                link.symlink_to(study.OPENKBP / source / f"{case}.nii.gz")
    return folder


def encoder_args(arm: str, runs: Path) -> list[str]:
    """``pgl-zoo finetune``'s encoder flags of an arm (the pretraining runs exported once, as the probe does)."""
    if arm == "random":
        return ["--encoder", "none", "--arch", str(study.STUDY_CARD)]
    folder = runs / "encoders" / arm
    if not (folder / "card.json").exists():
        committed = COMMITTED_ENCODERS / arm
        if not (runs / "pretrain" / arm / "summary.json").exists() and (committed / "card.json").exists():
            return ["--encoder", str(committed)]
        study.arm_encoder(arm, runs)  # exports the finished run into runs/encoders/ARM
    return ["--encoder", str(folder)]


def cli(*args: str) -> None:
    """A pgl-zoo command in its own process (so it runs alone with the study's thread count)."""
    command = [sys.executable, "-m", "pgl_zoo.cli", *args]
    print(" ".join(command), flush=True)
    subprocess.run(command, check=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))


def train(runs: Path, out: Path, recipe: dict, arm: str, cases: list[str], plan: Plan, epochs: int) -> None:
    """``pgl-zoo finetune`` (resumed when its checkpoint exists; skipped when finished)."""
    if (out / "model" / "card.json").exists():
        print(f"{out}: finished, reused", flush=True)
        return
    resume = ["--resume"] if (out / "checkpoints" / "last.pt").exists() else []
    cli("finetune", "--data", str(study.OPENKBP), "--num-classes", str(len(study.ORGANS) + 1), "--out", str(out),
        "--train-cases", ",".join(cases), "--val-cases", ",".join(validation_cases(plan)),
        "--labelled-classes", str(study.OPENKBP / "structures.json"), "--spacing", recipe["spacing"],
        "--window", recipe["window"], "--normalization", recipe["normalization"], "--patch-size", recipe["patch"],
        "--epochs", str(epochs), "--steps-per-epoch", str(plan.steps_per_epoch), "--batch-size", str(BATCH),
        "--overlap", str(plan.overlap), "--seed", "0", "--name", f"study-{out.parent.name}-{out.name}",
        "--no-progress", *encoder_args(arm, runs), *resume)


def score_on_test(runs: Path, run: Path, plan: Plan) -> dict:
    """Segment the test patients with the run's best model and score them (partial labels); cached as test.json."""
    from pgl_zoo.evaluate import evaluate_folders
    from pgl_zoo.finetune.data import read_label_names
    from pgl_zoo.partial_labels import read_labelled_classes
    from pgl_zoo.runs import atomic_write_json

    result = run / "test.json"
    if result.exists():
        return json.loads(result.read_text())
    tests = study.openkbp_split()["test"][: plan.test_cases]
    folder = case_folder(runs, "test_cases", tests)
    predictions = run / "test_predictions"
    cli("segment", *[str(folder / "images" / f"{c}.nii.gz") for c in tests], "-o", str(predictions),
        "--model", str(run), "--overlap", str(plan.overlap), "--no-progress", "--overwrite")
    names = read_label_names(study.OPENKBP)  # dataset.json: "1" -> "Brainstem", ...
    labelled = read_labelled_classes(study.OPENKBP / "structures.json", names, len(study.ORGANS) + 1)
    evaluation = evaluate_folders(predictions, folder / "labels", len(study.ORGANS) + 1, names,
                                  labelled_classes=labelled)
    record = evaluation.to_dict()
    atomic_write_json(result, record)
    return record


ONSET_DICE = 0.2  # an organ has "switched on" once its validation Dice reaches this (the curves jump past it)


def validation_curve(run: Path) -> list[dict]:
    """(epoch, step, validation mean Dice, validation Dice per organ) per epoch from the run's metrics.jsonl."""
    rows = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        rows.append({"epoch": record["epoch"], "step": record["step"], "val_dice": record["val_mean_dice"],
                     "organs": record.get("val_dice")})
    return rows


def onset_steps(curve: list[dict]) -> dict[str, int | None]:
    """Per organ, the first validation step at which its Dice reached ``ONSET_DICE`` (None: never; the
    organs on these curves go from about 0 to 0.5-0.8 within a few hundred steps, or stay at 0)."""
    onsets: dict[str, int | None] = {o: None for o in study.ORGANS}
    for row in curve:
        for organ, dice in (row.get("organs") or {}).items():
            if organ in onsets and onsets[organ] is None and dice is not None and dice >= ONSET_DICE:
                onsets[organ] = row["step"]
    return onsets


def run_recipe(runs: Path, plan: Plan, quick: bool) -> str:
    """Train every candidate; returns (and records in recipe.json) the one with the best validation Dice."""
    results = {}
    for name in plan.recipes:
        out = runs / "finetune" / "recipe" / name
        train(runs, out, RECIPES[name], "random", train_cases(plan, 0, quick), plan, plan.recipe_epochs)
        curve = validation_curve(out)
        best = max((r for r in curve if r["val_dice"] is not None), key=lambda r: r["val_dice"])
        results[name] = {"recipe": RECIPES[name], "curve": curve, "best": best}
        print(f"recipe {name}: best validation mean Dice {best['val_dice']:.3f} at epoch {best['epoch']}", flush=True)
    chosen = max(results, key=lambda n: results[n]["best"]["val_dice"])
    path = runs / "finetune" / "recipe.json"
    path.write_text(json.dumps({"chosen": chosen, "candidates": results,
                                "validation_cases": validation_cases(plan)}, indent=1) + "\n")
    print(f"chosen recipe: {chosen} {RECIPES[chosen]}", flush=True)
    return chosen


def recipe_record(runs: Path) -> dict | None:
    """The recipe stage's result: the work folder's own ``finetune/recipe.json``, else the study's committed
    record (``RECIPE_RECORD``, the measurement of 2026-12-06), so that the fine-tunes resume on a new machine."""
    for path in (runs / "finetune" / "recipe.json", RECIPE_RECORD):
        if path.exists():
            return json.loads(path.read_text())
    return None


def chosen_recipe(runs: Path) -> str:
    record = recipe_record(runs)
    if record is None:
        raise SystemExit(f"{runs / 'finetune' / 'recipe.json'}: run the recipe stage first")
    return record["chosen"]


def report_name(quick: bool) -> str:
    return "transfer_v3_finetune-quick" if quick else "transfer_v3_finetune"


def records_folder(out: Path, quick: bool) -> Path:
    """Where the report keeps one JSON per finished run (``OUT/NAME_runs``; the study's are committed in
    ``benchmarks/results/transfer_v3_finetune_runs``)."""
    return out / f"{report_name(quick)}_runs"


def run_finetune(runs: Path, arm: str, subsets: list[int], plan: Plan, epochs: int, quick: bool,
                 results: Path = RESULTS) -> None:
    """Fine-tune and score each subset; a run already recorded in ``records_folder(results)`` (committed, by
    an earlier session's report) is not run again, whichever machine ran it (``--quick`` always runs)."""
    recipe = RECIPES[chosen_recipe(runs)]
    records = records_folder(results, quick)
    for s in subsets:
        label = run_label(s, epochs, plan)
        if not quick and (records / f"{arm}_{label}.json").exists():
            print(f"{arm} {label}: recorded in {records}, reused", flush=True)
            continue
        out = runs / "finetune" / arm / label
        train(runs, out, recipe, arm, train_cases(plan, s, quick), plan, epochs)
        record = score_on_test(runs, out, plan)
        print(f"{arm} {label}: test mean Dice {record['mean']['dice']['mean']}", flush=True)


def collect_runs(runs: Path, records: Path, plan: Plan) -> None:
    """Each finished run of the work folder as one JSON in ``records`` (its test Dice per organ and patient,
    validation curve and training patients): the study's durable result, committed with the report, so
    that a later session on a new machine reports every run, those of earlier sessions included."""
    from pgl_zoo.runs import atomic_write_json

    for arm in plan.arms:
        for run in sorted((runs / "finetune" / arm).glob("s*")):
            label = _RUN_LABEL.fullmatch(run.name)
            if label and int(label[1]) < plan.subsets and (run / "test.json").exists():
                s = int(label[1])
                test = json.loads((run / "test.json").read_text())
                atomic_write_json(records / f"{arm}_{run.name}.json", {
                    "arm": arm, "subset": s, "train_cases": train_cases(plan, s, plan == QUICK),
                    "steps": int(label[2]) if label[2] else plan.steps,
                    "test_mean_dice": test["mean"]["dice"]["mean"],
                    "organs": {o: test["mean"]["dice"].get(o) for o in study.ORGANS},
                    "cases_per_organ": test["cases_per_class"]["dice"], "curve": validation_curve(run),
                    "test": test})


def case_dice(test: dict) -> np.ndarray:
    """A run's test Dice as (patients in sorted order, organs in ``study.ORGANS`` order), NaN where not scored."""
    cases = test["cases"]
    return np.array([[np.nan if cases[c]["dice"].get(o) is None else cases[c]["dice"][o] for o in study.ORGANS]
                     for c in sorted(cases)], dtype=np.float64)


def by_subset(runs_found: dict, arm: str, subsets: list[int]) -> dict[int, dict]:
    """An arm's runs as ``study.paired_difference`` reads probe records: subset -> mean Dice and organ means
    (NaN where the organ was never scored)."""
    return {s: {"mean_dice": runs_found[(arm, s)]["test_mean_dice"],
                "organ_mean": {o: np.nan if d is None else d for o, d in runs_found[(arm, s)]["organs"].items()}}
            for s in subsets}


def summarise(records: Path, plan: Plan) -> dict:
    """Test Dice per (arm, subset), validation curves, and paired differences from the run records of
    :func:`collect_runs`, each with two 95 % bootstrap intervals: over the training subsets (``low``/``high``,
    none below ``study.MIN_INTERVAL_SUBSETS`` subsets), and over the subsets and the test patients
    (``patients``: the same patients resampled for both arms; below ``MIN_INTERVAL_SUBSETS`` subsets the
    patients alone, the subsets held fixed: what one or two subsets can say). Runs on another schedule
    (:func:`run_label`) are listed under ``other_schedules``, outside every difference."""
    from transfer import two_level_interval  # benchmarks/transfer.py: one home of the intervals

    steps = plan.steps
    runs_found, cases, other_schedules = {}, {}, []
    for path in sorted(records.glob("*_s*.json")):
        record = json.loads(path.read_text())
        if record["arm"] in plan.arms and record["subset"] < plan.subsets:
            summary = {"steps": steps, **{k: v for k, v in record.items() if k != "test"}}  # older: no "steps"
            if summary["steps"] != steps:
                other_schedules.append(summary)
                continue
            key = (record["arm"], record["subset"])
            runs_found[key] = summary
            cases[key] = record["test"]
    differences = []
    for a, b in (("pgl", "random"), ("pgl", "byol"), ("byol", "random")):
        paired = sorted(s for (arm, s) in runs_found if arm == a and (b, s) in runs_found)
        if paired:
            for s in paired:
                if sorted(cases[(a, s)]["cases"]) != sorted(cases[(b, s)]["cases"]):
                    raise SystemExit(f"{records}: {a}_s{s} and {b}_s{s} were scored on different test patients")
            row = study.paired_difference(by_subset(runs_found, a, paired), by_subset(runs_found, b, paired),
                                          f"{a} - {b}", FT_K)
            row["per_subset"] = {s: runs_found[(a, s)]["test_mean_dice"] - runs_found[(b, s)]["test_mean_dice"]
                                 for s in paired}
            resample_subsets = len(paired) >= study.MIN_INTERVAL_SUBSETS
            two_level = two_level_interval(np.stack([case_dice(cases[(a, s)]) for s in paired]),
                                           np.stack([case_dice(cases[(b, s)]) for s in paired]),
                                           resample_subsets=resample_subsets)
            two_level["subsets_resampled"] = resample_subsets
            two_level["organs"] = dict(zip(study.ORGANS, two_level["organs"], strict=True))
            differences.append({**row, "patients": two_level})
    return {"runs": list(runs_found.values()), "differences": differences, "steps": steps,
            "other_schedules": other_schedules}


def organ_cells(organs: dict) -> str:
    """A run's test Dice per organ as Markdown table cells, in ``study.ORGANS`` order ('-': never scored)."""
    return " | ".join("-" if organs[o] is None else f"{organs[o]:.3f}" for o in study.ORGANS)


def other_schedule_lines(table: dict) -> list[str]:
    """The report's lines for runs on another schedule, each beside the same arm and subset on the study's:
    test mean Dice, the best validation step, the validation mean at the study's last step and at the end."""
    if not table["other_schedules"]:
        return []
    steps = table["steps"]
    study_runs = {(r["arm"], r["subset"]): r for r in table["runs"]}
    lines = ["", f"Other schedules (schedule checks, not paired with the {steps:,}-step runs above):", "",
             f"| arm | subset | steps | test mean Dice | on {steps:,} steps | best validation step | validation "
             f"mean at {steps:,} / at the end | " + " | ".join(study.ORGANS) + " |",
             "|---|---|---|---|---|---|---|" + "---|" * len(study.ORGANS)]
    for row in table["other_schedules"]:
        curve = [r for r in row["curve"] if r["val_dice"] is not None]
        best = max(curve, key=lambda r: r["val_dice"])
        at = next((r["val_dice"] for r in curve if r["step"] == steps), None)
        same = study_runs.get((row["arm"], row["subset"]))
        lines.append(f"| {row['arm']} | {row['subset']} | {row['steps']:,} | {row['test_mean_dice']:.3f} | "
                     f"{'-' if same is None else format(same['test_mean_dice'], '.3f')} | {best['step']} | "
                     f"{'-' if at is None else format(at, '.3f')} / {curve[-1]['val_dice']:.3f} | "
                     + organ_cells(row["organs"]) + " |")
    return lines


def run_report(runs: Path, out: Path, plan: Plan, quick: bool) -> Path:
    """Collect the work folder's finished runs into :func:`records_folder` (one JSON each; earlier sessions'
    records stay), then report every record there as ``OUT/NAME.{json,md}`` and ``OUT/NAME_curves.png``."""
    name, records = report_name(quick), records_folder(out, quick)
    collect_runs(runs, records, plan)
    table = summarise(records, plan)
    table["recipe"] = recipe_record(runs)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(table, indent=1) + "\n")
    lines = [f"# {name}: full fine-tuning on OpenKBP organs at risk, K = {FT_K}", ""]
    if table["recipe"]:
        lines += ["Recipe candidates (from scratch, validation mean Dice, best epoch):", ""]
        for cand, result in table["recipe"]["candidates"].items():
            epoch = result["best"]["epoch"]
            lines.append(f"- {cand} {result['recipe']}: {result['best']['val_dice']:.3f}"
                         f"{'' if epoch is None else f' at epoch {epoch}'}"
                         f"{' (chosen)' if cand == table['recipe']['chosen'] else ''}")
        lines += ([""] if "note" not in table["recipe"] else ["", table["recipe"]["note"]]) + [""]
    lines += ["| arm | subset | test mean Dice | " + " | ".join(study.ORGANS) + " |",
              "|---|---|---|" + "---|" * len(study.ORGANS)]
    for row in table["runs"]:
        lines.append(f"| {row['arm']} | {row['subset']} | {row['test_mean_dice']:.3f} | "
                     + organ_cells(row["organs"]) + " |")
    lines += other_schedule_lines(table)
    lines += ["", f"Validation step at which each organ's Dice first reached {ONSET_DICE} ('-': never; runs recorded "
              "before per-organ curves were kept have none):", "",
              "| arm | subset | " + " | ".join(study.ORGANS) + " |", "|---|---|" + "---|" * len(study.ORGANS)]
    for row in table["runs"] + table["other_schedules"]:
        if any(r.get("organs") for r in row["curve"]):
            onsets = onset_steps(row["curve"])
            subset = row["subset"] if row["steps"] == table["steps"] else f"{row['subset']} ({row['steps']:,} steps)"
            lines.append(f"| {row['arm']} | {subset} | "
                         + " | ".join("-" if onsets[o] is None else str(onsets[o]) for o in study.ORGANS) + " |")
    lines += ["", "Paired differences of test mean Dice, each with two 95 % bootstrap intervals: over the training "
              f"subsets (from {study.MIN_INTERVAL_SUBSETS} subsets), and over the subsets and the 39 test patients "
              "(the same patients resampled for both arms; below "
              f"{study.MIN_INTERVAL_SUBSETS} subsets the patients alone, the subsets held fixed). Neither counts "
              "the training run's own randomness beyond what differs between subsets.", "",
              "| comparison | subsets | difference [interval over subsets] | interval over subsets and patients "
              "| per subset |", "|---|---|---|---|---|"]
    for row in table["differences"]:
        level = "" if row["patients"]["subsets_resampled"] else " (patients only)"
        lines.append(f"| {row['comparison']} | {row['n']} | {study.interval_text(row)} | "
                     f"[{row['patients']['low']:+.3f}, {row['patients']['high']:+.3f}]{level} | "
                     + ", ".join(f"s{s}: {d:+.3f}" for s, d in row["per_subset"].items()) + " |")
    lines += study.organ_difference_lines(table["differences"], with_k=False)
    lines += ["", f"Per organ, over the subsets (from {study.MIN_INTERVAL_SUBSETS}) and the test patients who have "
              "the organ contoured:", "",
              "| comparison | " + " | ".join(study.ORGANS) + " |", "|---" * (len(study.ORGANS) + 1) + "|"]
    for row in table["differences"]:
        lines.append(f"| {row['comparison']} | " + " | ".join(
            study.interval_text({"mean": m, "low": lo, "high": hi})
            for m, lo, hi in (row["patients"]["organs"][o] for o in study.ORGANS)) + " |")
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    _plot_curves(table, out / f"{name}_curves.png")
    return out / f"{name}.md"


def _plot_curves(table: dict, path: Path) -> None:
    colours = {"random": "tab:gray", "byol": "tab:blue", "pgl": "tab:red"}

    def draw(ax) -> None:
        for row in table["runs"] + table["other_schedules"]:
            curve = [r for r in row["curve"] if r["val_dice"] is not None]
            other = row["steps"] != table["steps"]
            ax.plot([r["step"] for r in curve], [r["val_dice"] for r in curve], color=colours.get(row["arm"]),
                    linestyle="--" if other else "-",
                    label=f"{row['arm']} s{row['subset']}, {row['steps']:,} steps" if other
                    else row["arm"] if row["subset"] == 0 else None)
        ax.set_xlabel("step")
        ax.set_ylabel(f"validation mean Dice ({VAL_CASES} patients)")

    study.write_figure(path, draw)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="stage", required=True)
    sub.add_parser("recipe", help="measure the candidate recipes from scratch on the validation patients")
    f = sub.add_parser("finetune", help="fine-tune an arm with the chosen recipe and score it on the test patients")
    f.add_argument("--arm", required=True, choices=FT_ARMS)
    f.add_argument("--subset", type=int, default=None, help="one subset (default: all)")
    f.add_argument("--epochs", type=int, default=None,
                   help=f"epochs of {STEPS_PER_EPOCH} steps (default: the study's {FT_EPOCHS}; another number is a "
                        "schedule check, run and reported apart)")
    r = sub.add_parser("report")
    for q in (f, r):
        q.add_argument("--out", type=Path, default=RESULTS,
                       help="the report and its run records, OUT/transfer_v3_finetune_runs "
                            "(default: benchmarks/results)")
    for q in sub.choices.values():
        q.add_argument("--runs", type=Path, required=True, help="the study's work folder (as for transfer_hn.py)")
        q.add_argument("--quick", action="store_true", help="every branch on a tiny budget")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else Plan()
    if args.stage == "recipe":
        run_recipe(args.runs, plan, args.quick)
    elif args.stage == "finetune":
        epochs = plan.epochs if args.epochs is None else args.epochs
        subsets = [args.subset] if args.subset is not None else list(range(plan.subsets))
        run_finetune(args.runs, args.arm, subsets, plan, epochs, args.quick, args.out)
    else:
        print(run_report(args.runs, args.out, plan, args.quick))


if __name__ == "__main__":
    main()
