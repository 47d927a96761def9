"""The transfer study v2 (benchmarks/transfer.py): its statistics and labelled subsets, and its
--quick mode end to end on real scans (every path: pretraining variants, selection, fine-tuning,
probe, tables and plot), on the code path the GPU machine takes (no SimpleITK in the workers)."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _seg_helpers import DATA_DIR

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

transfer = importlib.import_module("transfer")  # benchmarks/transfer.py


def test_labelled_subsets_are_distinct_and_reproducible():
    names = [f"c{i}" for i in range(5)]
    for k in (1, 2, 4):
        subsets = transfer.labelled_subsets(names, k, 5, 7)
        assert len(subsets) == 5 and all(len(s) == k for s in subsets)
        assert len({tuple(s) for s in subsets}) == 5
        assert subsets == transfer.labelled_subsets(names, k, 5, 7)
    many = [f"c{i}" for i in range(170)]
    subsets = transfer.labelled_subsets(many, 5, 5, 7)
    assert len({tuple(s) for s in subsets}) == 5


def test_bootstrap_interval_brackets_the_mean_and_detects_a_consistent_gain():
    mean, lo, hi = transfer.bootstrap_interval([0.02, 0.03, 0.025, 0.04, 0.01])
    assert lo <= mean <= hi and lo > 0
    mean, lo, hi = transfer.bootstrap_interval([0.05, -0.05, 0.04, -0.06, 0.01])
    assert lo < 0 < hi


def test_two_level_interval_pairs_patients_and_counts_both_levels_of_sampling():
    rng = np.random.default_rng(0)
    b = rng.uniform(0.2, 0.9, size=(3, 39, 7))  # patients differ a lot from one another
    b[:, ::3, 4] = np.nan  # an organ contoured in a third of the patients only: not scored elsewhere
    a = b + 0.05  # the same gain on every patient: pairing leaves no spread
    result = transfer.two_level_interval(a, b)
    assert result["mean"] == pytest.approx(0.05) and result["low"] == pytest.approx(0.05)
    assert result["high"] == pytest.approx(0.05)
    assert [row[0] for row in result["organs"]] == pytest.approx([0.05] * 7)
    # the statistic is the evaluation's: per organ the mean over the patients who have it, then over organs
    a[:, :, 4] = np.where(np.isnan(b[:, :, 4]), 0.0, b[:, :, 4] + 0.4)  # a score where b has none: dropped
    organ_gain = np.array([0.05] * 4 + [0.4] + [0.05] * 2)
    assert transfer.two_level_interval(a, b)["mean"] == pytest.approx(organ_gain.mean())
    # test patients' noise alone (one subset): an interval around the mean that is not a point
    noisy = b[:1] + rng.normal(0.0, 0.1, size=b[:1].shape)
    one = transfer.two_level_interval(noisy, b[:1])
    assert one["low"] < one["mean"] < one["high"] and one["high"] - one["low"] > 0.01
    # subsets that disagree (+0.2, -0.2, +0.2): wider than the patients' sampling within each subset
    shifts = np.array([0.2, -0.2, 0.2])[:, None, None]
    spread = transfer.two_level_interval(b + shifts, b)
    assert spread["low"] < 0 < spread["high"] and spread["mean"] == pytest.approx(0.2 / 3)
    fixed = transfer.two_level_interval(b + shifts, b, resample_subsets=False)  # the subsets held as they are
    assert fixed["low"] == pytest.approx(0.2 / 3) and fixed["high"] == pytest.approx(0.2 / 3)
    with pytest.raises(ValueError, match="shapes"):
        transfer.two_level_interval(a[:2], b)


def test_summarise_pairs_differences_by_subset():
    records = []
    for subset, (s, p) in enumerate([(0.5, 0.6), (0.7, 0.75), (0.2, 0.4)]):
        for arm, dice in (("scratch", s), ("pgl", p)):
            records.append({"purpose": "test", "modality": "CT", "mode": "full", "k": 1, "arm": arm, "subset": subset,
                            "mean_dice": dice})
    records.append({"purpose": "test", "modality": "CT", "mode": "full", "k": 1, "arm": "pgl", "subset": 9,
                    "mean_dice": 0.0})  # no scratch partner: in the mean Dice, not in the paired difference
    rows = {r["arm"]: r for r in transfer.summarise(records)}
    assert rows["pgl"]["n"] == 4 and rows["pgl"]["mean_dice"] == pytest.approx((0.6 + 0.75 + 0.4 + 0.0) / 4)
    assert rows["pgl"]["vs_scratch"][0] == pytest.approx((0.1 + 0.05 + 0.2) / 3)
    assert "vs_scratch" not in rows["scratch"]


def test_choose_best_ignores_controls_and_prefers_the_default_on_ties():
    recs = [{"arm": "pgl", "mean_dice": 0.5}, {"arm": "pgl-w2", "mean_dice": 0.5},
            {"arm": "pgl-shuffled", "mean_dice": 0.9}, {"arm": "byol", "mean_dice": 0.8}]
    best, scores = transfer.choose_best(recs)
    assert best == "pgl" and scores["pgl-shuffled"] == 0.9
    best, _ = transfer.choose_best(recs + [{"arm": "pgl-near", "mean_dice": 0.6}])
    assert best == "pgl-near"


@pytest.mark.skipif(not (DATA_DIR / "ct" / "lctsc_lungs").is_dir(), reason=f"needs {DATA_DIR}")
def test_quick_study_runs_every_path(tmp_path):
    env = {**os.environ, "PGL_STUDY_NO_SIMPLEITK": "1", "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "study_data.py"), "--out", str(tmp_path / "data"),
                    "--small"], check=True, env=env | {"PGL_STUDY_NO_SIMPLEITK": ""}, capture_output=True)
    # two job processes of one torch thread each: the tiny jobs gain nothing from threads, and a 2-core runner
    # then runs two at a time (the path a multi-GPU machine takes with --workers)
    workers = ["--workers", "2", "--threads", "1"]
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "transfer.py"), "--quick", "--data",
                           str(tmp_path / "data"), "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out"),
                           *workers], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "out" / "transfer_v2-quick.json").read_text())
    assert result["meta"]["jobs"]["failed"] == 0, [r.get("error") for r in result["records"] if "error" in r]
    pre = [r for r in result["records"] if r["kind"] == "pretrain"]
    expected = {(m, v) for m in ("CT", "MRI") for v in transfer.QUICK_VARIANTS}
    assert {(r["modality"], r["variant"]) for r in pre} == expected
    for r in pre:  # realised views and collapse indicators reach the records
        assert r["views_mean"]["overlap"] > 0 and r["final_indicators"]["std_global"] >= 0
    for manifest in result["meta"]["manifests"].values():  # test cases are never pretrained or fine-tuned on
        pool_names = {Path(s.split(" [")[0]).name.split(".")[0] for s in manifest["pool_sources"]}
        assert not pool_names & set(manifest["test"]) and not set(manifest["train"]) & set(manifest["test"])
    assert all(set(r["train"]).isdisjoint(r["val"]) for r in result["records"] if r["kind"] == "finetune")
    arms = {(r["modality"], r["mode"], r["arm"]) for r in result["summary"]}
    for m in ("CT", "MRI"):
        assert {a for mm, mode, a in arms if mm == m and mode == "full"} >= {"scratch", "byol", "pgl", "pgl:enc"}
        assert {a for mm, mode, a in arms if mm == m and mode == "probe"} >= {"scratch", "byol", "pgl"}
        assert result["selection"][m]["best"] in transfer.CANDIDATES
    rows = [r for r in result["summary"] if r["arm"] != "scratch"]
    assert all("vs_scratch" in r and np.isfinite(r["vs_scratch"][0]) for r in rows)
    assert (tmp_path / "out" / "transfer_v2-quick.md").read_text().count("| CT |") >= 5
    assert (tmp_path / "out" / "transfer_v2-quick_curves.png").stat().st_size > 1000
    # a second run reuses every record (resumable) and gives the same table
    again = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "transfer.py"), "--quick", "--data",
                            str(tmp_path / "data"), "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out2"),
                            *workers], env=env, capture_output=True, text=True)
    assert again.returncode == 0
    assert json.loads((tmp_path / "out2" / "transfer_v2-quick.json").read_text())["summary"] == result["summary"]
