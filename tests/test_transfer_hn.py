"""The transfer study v3 (benchmarks/transfer_hn.py): the probe on cached features equals the live probe,
subsets are paired across arms, and --quick runs every stage on real OpenKBP scans."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
study = importlib.import_module("transfer_hn")  # benchmarks/transfer_hn.py
finetune_half = importlib.import_module("transfer_hn_finetune")  # benchmarks/transfer_hn_finetune.py

from pgl_zoo.nets import build_encoder  # noqa: E402
from pgl_zoo.nets.probe import LinearProbe3d  # noqa: E402
from pgl_zoo.preprocessing.intensity import normalize_intensities  # noqa: E402

needs_openkbp = pytest.mark.skipif(not study.OPENKBP.is_dir(), reason=f"{study.OPENKBP} is absent")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_a_probe_on_cached_features_equals_the_probe_computed_live():
    """Train on the cached (upsampled, sampled) features, predict from cached stage maps; the same head inside
    LinearProbe3d on the live volume gives the same logits at the sampled voxels and the same labels."""
    card = study.study_card()
    torch.manual_seed(0)
    encoder = build_encoder(card.arch).eval()
    encoder.card = card
    rng = np.random.default_rng(0)
    image = rng.integers(-1000, 1200, (21, 35, 30)).astype(np.int16)  # not a multiple of the stride
    label = rng.integers(0, len(study.ORGANS) + 1, image.shape).astype(np.uint8)
    features = study.encode(encoder, card, image)
    samples = np.sort(rng.choice(image.size, 500, replace=False))
    x = study.upsampled_features(features, image.shape).reshape(sum(f.shape[1] for f in features), -1)[:, samples].T
    mask = np.ones(len(study.ORGANS) + 1, bool)
    head = study.fit_probe([x], [label.ravel()[samples]], [mask], encoder.widths, steps=20)
    live = LinearProbe3d(encoder, len(study.ORGANS) + 1).eval()
    live.head.load_state_dict(head.head.state_dict())
    with torch.no_grad():
        prep = card.preprocessing
        x_live = torch.from_numpy(normalize_intensities(image.astype(np.float32), prep.window, prep.normalization))
        logits = live(x_live[None, None])[0]
    flat = logits.reshape(logits.shape[0], -1)[:, samples].T
    weight = torch.cat([c.weight[:, :, 0, 0, 0] for c in head.head], 1)
    cached_logits = torch.from_numpy(x) @ weight.T + head.head[0].bias
    assert torch.allclose(flat, cached_logits, atol=1e-4)
    cached = {f"f{i}": f[0].numpy() for i, f in enumerate(features)}  # float32 cache: exact
    assert np.array_equal(study.predict_cached(head, cached, image.shape), logits.argmax(0).numpy())
    half = {k: v.astype(np.float16) for k, v in cached.items()}  # the study's float16 cache: nearly
    assert (study.predict_cached(head, half, image.shape) == logits.argmax(0).numpy()).mean() > 0.99


@needs_openkbp
def test_subsets_are_a_function_of_k_and_index_only():
    budget = study.Budget()
    pool = study.labelled_pool(budget)
    assert len(pool) == study.POOL_SIZE and not set(pool) & set(study.openkbp_split()["test"])
    for k in study.KS:
        drawn = study.subsets(budget, k)
        assert drawn == study.subsets(budget, k) and len(drawn) == study.SUBSETS
        assert len({tuple(s) for s in drawn}) == study.SUBSETS and all(set(s) <= set(pool) for s in drawn)


@needs_openkbp
@pytest.mark.slow
def test_quick_study_runs_every_stage_and_pairs_arms(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    runs = ["--runs", str(tmp_path / "runs"), "--quick"]
    # the pretraining stage as a user runs it (it starts `pgl-zoo pretrain` processes); the others in this process
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "transfer_hn.py"), "pretrain", "--threads", "1",
                           *runs], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-3000:])
    study.main(["prepare", *runs])
    for arm in study.PROBE_ARMS:
        study.main(["features", "--arm", arm, *runs])
        study.main(["probe", "--arm", arm, *runs])
    study.main(["report", "--out", str(tmp_path / "results"), *runs])
    report = json.loads((tmp_path / "results" / "transfer_v3-quick.json").read_text())
    records = report["records"]
    assert {r["arm"] for r in records} == set(study.PROBE_ARMS)
    by_subset: dict = {}
    for r in records:
        by_subset.setdefault((r["k"], r["subset"]), set()).add(tuple(r["train_cases"]))
        contoured = json.loads((study.OPENKBP / "structures.json").read_text())
        for case, dice in r["dice"].items():  # only contoured organs are scored
            assert set(dice) == set(contoured[case]["structures"])
    assert all(len(cases) == 1 for cases in by_subset.values())  # every arm trained on the same subsets
    assert {row["comparison"] for row in report["differences"]} >= {"pgl - random", "pgl - byol", "pgl - shuffled",
                                                                    "pgl - pgl-small", "pgl - pgl-ct"}
    quick = study.QUICK
    assert report["fits"] == {arm: len(quick.ks) * quick.subsets for arm in study.PROBE_ARMS}
    assert (tmp_path / "results" / "transfer_v3-quick.md").read_text().count("|") > 10
    # test patients never enter pretraining
    sources = json.loads((tmp_path / "runs" / "pretrain" / "pgl" / "summary.json").read_text())["data"]["sources"]
    assert not {Path(s).name.removesuffix(".nii.gz") for s in sources} & set(study.openkbp_split()["test"])
    # the fine-tuning half on the same quick pretraining runs: recipe, then the arms, each scored on the test patient
    finetune_half.main(["recipe", *runs])
    for arm in finetune_half.QUICK.arms:
        finetune_half.main(["finetune", "--arm", arm, *runs])
    finetune_half.main(["report", "--out", str(tmp_path / "results"), *runs])
    table = json.loads((tmp_path / "results" / "transfer_v3_finetune-quick.json").read_text())
    assert table["recipe"]["chosen"] == "study"
    assert {(r["arm"], r["subset"]) for r in table["runs"]} == {("random", 0), ("pgl", 0)}
    assert len({tuple(r["train_cases"]) for r in table["runs"]}) == 1  # both arms fine-tuned on the same patients
    test_case = study.openkbp_split()["test"][0]
    contoured = set(json.loads((study.OPENKBP / "structures.json").read_text())[test_case]["structures"])
    for r in table["runs"]:  # an organ is counted only where it is contoured
        assert {o for o, n in r["cases_per_organ"].items() if n} <= contoured
        assert len(r["curve"]) == 1 and 0 <= r["test_mean_dice"] <= 1
    assert [row["comparison"] for row in table["differences"]] == ["pgl - random"]
    # each run is recorded on its own; a report from a work folder without the runs still reports them
    records = tmp_path / "results" / "transfer_v3_finetune-quick_runs"
    assert sorted(p.name for p in records.iterdir()) == ["pgl_s0.json", "random_s0.json"]
    assert json.loads((records / "pgl_s0.json").read_text())["test"]["mean"]["dice"]["mean"] == next(
        r["test_mean_dice"] for r in table["runs"] if r["arm"] == "pgl")
    finetune_half.main(["report", "--out", str(tmp_path / "results"), "--quick", "--runs", str(tmp_path / "new")])
    again = json.loads((tmp_path / "results" / "transfer_v3_finetune-quick.json").read_text())
    assert again["runs"] == table["runs"] and again["differences"] == table["differences"]


def test_paired_differences_pair_by_subset_and_claim_no_interval_below_three_subsets():
    """The report pairs arms by (K, subset): a subset only one arm finished is left out of the difference; with
    two paired subsets the Markdown states the mean and no interval, with four it gives the bootstrap interval."""
    rng = np.random.default_rng(0)

    def record(arm, k, s, dice):
        organs = {o: float(dice + rng.normal(0, 0.01)) for o in study.ORGANS}
        return {"arm": arm, "k": k, "subset": s, "mean_dice": float(np.mean(list(organs.values()))),
                "organ_mean": organs}

    records = [record("random", 1, s, 0.1 + 0.01 * s) for s in range(4)]  # random finished 4 subsets at K = 1
    records += [record("pgl", 1, s, 0.15 + 0.01 * s) for s in range(2)]  # pgl only 2 of them
    records += [record(arm, 2, s, base) for s in range(4) for arm, base in (("random", 0.2), ("pgl", 0.25))]
    table = study.summarise(records)
    by = {(r["arm"], r["k"], r["subset"]): r for r in records}
    rows = {(row["k"], row["comparison"]): row for row in table["differences"]}
    k1 = rows[(1, "pgl - random")]
    assert k1["n"] == 2 and k1["mean"] == pytest.approx(
        np.mean([by[("pgl", 1, s)]["mean_dice"] - by[("random", 1, s)]["mean_dice"] for s in range(2)]))
    assert "no interval" in study.interval_text(k1) and "[" not in study.interval_text(k1)
    k2 = rows[(2, "pgl - random")]
    assert k2["n"] == 4 and k2["low"] <= k2["mean"] <= k2["high"] and "[" in study.interval_text(k2)
    lines = study.organ_difference_lines(table["differences"], with_k=True)
    assert len(lines) == 5 + len(table["differences"])
    assert all(line.count("|") == len(study.ORGANS) + 3 for line in lines[3:])


def test_fine_tune_report_gives_one_subset_an_interval_over_test_patients_only(tmp_path):
    """With one subset per arm the report claims no interval over subsets, and gives the two-level interval
    over the test patients, paired: pgl = random + 0.03 on every scored organ of every patient gives exactly
    +0.03; records scored on different test patients are refused."""
    rng = np.random.default_rng(2)
    cases = {f"hn_{i:03d}": {"dice": {o: (None if (i + j) % 4 == 0 else float(rng.uniform(0.1, 0.9)))
                                      for j, o in enumerate(study.ORGANS)}} for i in range(240, 252)}

    def record(arm, shift, test_cases):
        shifted = {c: {"dice": {o: None if d is None else d + shift for o, d in v["dice"].items()}}
                   for c, v in test_cases.items()}
        organs = {o: float(np.mean([v["dice"][o] for v in shifted.values() if v["dice"][o] is not None]))
                  for o in study.ORGANS}
        return {"arm": arm, "subset": 0, "test_mean_dice": float(np.mean(list(organs.values()))), "organs": organs,
                "curve": [], "test": {"cases": shifted}}

    records = tmp_path / "records"
    records.mkdir()
    (records / "random_s0.json").write_text(json.dumps(record("random", 0.0, cases)))
    (records / "pgl_s0.json").write_text(json.dumps(record("pgl", 0.03, cases)))
    table = finetune_half.summarise(records, finetune_half.Plan())
    (row,) = table["differences"]
    assert row["comparison"] == "pgl - random" and row["n"] == 1 and row["mean"] == pytest.approx(0.03)
    assert "no interval" in study.interval_text(row)
    assert row["patients"]["low"] == pytest.approx(0.03) and row["patients"]["high"] == pytest.approx(0.03)
    assert row["patients"]["organs"]["Larynx"][0] == pytest.approx(0.03)
    assert row["patients"]["subsets_resampled"] is False  # one subset: the test patients alone
    assert row["per_subset"] == {0: pytest.approx(0.03)}
    fewer = dict(list(cases.items())[:-1])
    (records / "pgl_s0.json").write_text(json.dumps(record("pgl", 0.03, fewer)))
    with pytest.raises(SystemExit, match="different test patients"):
        finetune_half.summarise(records, finetune_half.Plan())


def test_a_run_on_another_schedule_is_reported_apart_and_never_paired(tmp_path):
    """``finetune --epochs`` other than the study's: its own folder and record name, listed under
    ``other_schedules`` beside the same arm and subset on the study's schedule, in no difference."""
    plan = finetune_half.Plan()
    assert finetune_half.run_label(2, plan.epochs, plan) == "s2"
    assert finetune_half.run_label(2, 2 * plan.epochs, plan) == f"s2_{2 * plan.epochs * plan.steps_per_epoch}steps"
    study_steps = plan.epochs * plan.steps_per_epoch
    cases = {f"hn_{i:03d}": {"dice": dict.fromkeys(study.ORGANS, 0.5)} for i in range(240, 244)}

    def record(arm, dice, curve, **extra):
        shifted = {c: {"dice": dict.fromkeys(study.ORGANS, dice)} for c in cases}
        return {"arm": arm, "subset": 0, "test_mean_dice": dice, "organs": dict.fromkeys(study.ORGANS, dice),
                "curve": curve, "test": {"cases": shifted}, **extra}

    curve = [{"step": study_steps, "val_dice": 0.4, "organs": None}]
    longer = curve + [{"step": 2 * study_steps, "val_dice": 0.5, "organs": None}]
    records = tmp_path / "records"
    records.mkdir()
    (records / "random_s0.json").write_text(json.dumps(record("random", 0.5, curve)))  # older record: no "steps"
    (records / "pgl_s0.json").write_text(json.dumps(record("pgl", 0.53, curve, steps=study_steps)))
    (records / f"random_s0_{2 * study_steps}steps.json").write_text(
        json.dumps(record("random", 0.6, longer, steps=2 * study_steps)))
    table = finetune_half.summarise(records, plan)
    assert {(r["arm"], r["steps"]) for r in table["runs"]} == {("random", study_steps), ("pgl", study_steps)}
    (row,) = table["differences"]
    assert row["comparison"] == "pgl - random" and row["mean"] == pytest.approx(0.03)  # not 0.53 - 0.6
    (other,) = table["other_schedules"]
    assert other["steps"] == 2 * study_steps and other["test_mean_dice"] == 0.6
    (line,) = finetune_half.other_schedule_lines(table)[5:]
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[:7] == ["random", "0", f"{2 * study_steps:,}", "0.600", "0.500", str(2 * study_steps),
                         "0.400 / 0.500"]


def test_onset_is_the_first_validation_step_an_organ_reaches_the_threshold():
    organs = dict.fromkeys(study.ORGANS, 0.0)
    curve = [{"step": 50, "organs": {**organs, "Mandible": 0.3}},
             {"step": 100, "organs": {**organs, "Mandible": 0.1, "Larynx": finetune_half.ONSET_DICE}},
             {"step": 150, "organs": {**organs, "Mandible": 0.7, "Brainstem": None}}]
    onsets = finetune_half.onset_steps(curve)
    assert onsets["Mandible"] == 50 and onsets["Larynx"] == 100  # the first step, not the last or the best
    assert onsets["Brainstem"] is None and onsets["Esophagus"] is None
    assert finetune_half.onset_steps([{"step": 50, "val_dice": 0.1}]) == dict.fromkeys(study.ORGANS)  # older records


def test_replicates_pair_the_same_arm_by_subset_across_pretraining_runs(tmp_path):
    """A second pretraining run of pgl that is replicate 1 plus 0.02 on every subset gives replicate 2 - replicate
    1 = +0.02 exactly, an arm not replicated gets no row, and each replicate's pgl - byol is its own."""
    rng = np.random.default_rng(1)

    def record(arm, k, s, dice):
        organs = {o: float(dice + rng.normal(0, 0.01)) for o in study.ORGANS}
        return {"arm": arm, "k": k, "subset": s, "mean_dice": float(np.mean(list(organs.values()))),
                "organ_mean": organs}

    first = [record(arm, 5, s, base + 0.01 * s) for s in range(4)
             for arm, base in (("random", 0.1), ("byol", 0.15), ("pgl", 0.16))]
    shifted = {o: 0.02 for o in study.ORGANS}
    second = [r if r["arm"] != "pgl" else
              {**r, "mean_dice": r["mean_dice"] + 0.02,
               "organ_mean": {o: v + shifted[o] for o, v in r["organ_mean"].items()}} for r in first]
    rows = {row["comparison"]: row for row in study.replicate_differences(first, second, ["pgl", "byol"])}
    assert set(rows) == {"pgl: replicate 2 - replicate 1", "byol: replicate 2 - replicate 1",
                         "pgl - byol, replicate 1", "pgl - byol, replicate 2"}
    assert rows["pgl: replicate 2 - replicate 1"]["mean"] == pytest.approx(0.02)
    assert rows["pgl: replicate 2 - replicate 1"]["organs"]["Larynx"][0] == pytest.approx(0.02)
    assert rows["byol: replicate 2 - replicate 1"]["mean"] == pytest.approx(0.0)
    assert rows["pgl - byol, replicate 2"]["mean"] == pytest.approx(rows["pgl - byol, replicate 1"]["mean"] + 0.02)
    assert all(row["n"] == 4 for row in rows.values())
    # the report: this folder probed pgl and byol again; random comes from the earlier report
    runs, out = tmp_path / "runs", tmp_path / "results"
    for r in second:
        if r["arm"] != "random":
            path = runs / "probe" / r["arm"] / f"k{r['k']}_s{r['subset']}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(r))
    (tmp_path / "first.json").write_text(json.dumps({"records": first}))
    study.run_report(runs, out, study.Budget(ks=(5,), subsets=4), "replicate", tmp_path / "first.json",
                     ("pgl", "byol"))
    table = json.loads((out / "replicate.json").read_text())
    assert table["fits"]["random"] == table["fits"]["pgl"] == 4
    reported = {row["comparison"]: row["mean"] for row in table["replicates"]}
    assert reported["pgl: replicate 2 - replicate 1"] == pytest.approx(0.02)
    assert "| 5 | pgl: replicate 2 - replicate 1 | 4 | +0.020 [" in (out / "replicate.md").read_text()


def test_a_new_work_folder_fine_tunes_from_the_committed_encoders_and_recipe(tmp_path):
    """On a machine without the study's work folder the fine-tunes start from the committed encoders (whose
    weights match their cards' sha256) with the committed recipe; a folder's own pretraining run comes first."""
    import hashlib

    for arm in ("pgl", "byol"):
        flags = finetune_half.encoder_args(arm, tmp_path)
        folder = finetune_half.COMMITTED_ENCODERS / arm
        assert flags == ["--encoder", str(folder)]
        card = json.loads((folder / "card.json").read_text())
        assert hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest() == card["sha256"]
        assert card["preprocessing"] == {"spacing_xyz_mm": [4.0, 4.0, 3.0], "orientation": "LPS",
                                         "window": [-250.0, 350.0], "normalization": "minmax"}
    assert finetune_half.encoder_args("random", tmp_path)[:2] == ["--encoder", "none"]
    assert finetune_half.chosen_recipe(tmp_path) == "native-patch48"
    # a run an earlier session recorded is not run again (nothing is trained: the work folder stays empty)
    recorded = sorted(finetune_half.records_folder(finetune_half.RESULTS, quick=False).glob("*_s*.json"))
    assert recorded, "the study has recorded no fine-tune"
    first = json.loads(recorded[0].read_text())
    finetune_half.run_finetune(tmp_path, first["arm"], [first["subset"]], finetune_half.Plan(), 24, quick=False)
    assert not (tmp_path / "finetune").exists()
    # the records are read where --out puts them (subset 7: one the study never runs, so recorded only here)
    elsewhere = finetune_half.records_folder(tmp_path / "results", quick=False)
    elsewhere.mkdir(parents=True)
    (elsewhere / "byol_s7.json").write_text(json.dumps({**first, "arm": "byol", "subset": 7}))
    finetune_half.run_finetune(tmp_path, "byol", [7], finetune_half.Plan(), 24, quick=False,
                               results=tmp_path / "results")
    assert not (tmp_path / "finetune").exists()
    own = tmp_path / "finetune" / "recipe.json"
    own.parent.mkdir(parents=True)
    own.write_text(json.dumps({"chosen": "study"}))
    assert finetune_half.chosen_recipe(tmp_path) == "study"


def test_the_small_pool_arm_pretrains_on_the_other_ct_only(tmp_path):
    """``pgl-small`` reads OTHER_CT and nothing of OpenKBP; the other arms read the OpenKBP pool plus OTHER_CT."""
    small = study.pretrain_args(tmp_path, arm="pgl-small")
    assert small[::2] == ["--data"] * len(study.OTHER_CT)
    assert small[1::2] == [str(study.SHARED / "ct" / rel) for rel in study.OTHER_CT]
    assert not any("openkbp" in a for a in small)
    if study.OPENKBP.is_dir():
        full = study.pretrain_args(tmp_path, arm="pgl")
        assert full[1] == str(tmp_path / "openkbp_pool") and full[2:] == small
