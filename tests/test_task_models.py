"""The zoo's task models segment real scans as well as their cards say, through ``pgl-zoo segment``,
with label maps on each input's exact grid.

``pgl-lungs-ct`` is checked on the shipped sample case lung_005 (3 mm; held out from its training)
everywhere, and on the study's three held-out LCTSC cases at their original resolution when
``../shared/data`` is present; ``pgl-hippocampus-mri`` on the 30 held-out hippocampus cases (needs
``../shared``). The bar: Dice above the card's figure minus 0.05.

``pgl-hn-oars-ct`` is checked as a radiotherapy team would run it: ``pgl-zoo segment`` then ``pgl-zoo
evaluate --labelled-classes structures.json --hd95`` (an organ scored only where it was contoured). On
OpenKBP's 39 test patients (needs ``../shared``) the per-organ Dice and HD95 means and the number of cases
each covers must match the card (measured the same way by ``scripts/task_models.py hn-oars``). Everywhere,
the two test patients shipped as sample data must score the per-case Dice the card records for them: the
README's head-and-neck commands run that (tests/test_readme.py::test_head_and_neck_block), once.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from _cli import call
from _seg_helpers import DATA_DIR

import pgl_zoo
from pgl_zoo.datasets import sample_lungs_ct
from pgl_zoo.metrics import dice_per_class


def _segment_and_score(capsys, model: str, images: list, labels: list, tmp_path, num_classes: int) -> list[float]:
    out = tmp_path / "pred"
    code, _, err = call(capsys, "segment", "--model", model, "-o", str(out), "--no-progress", *map(str, images))
    assert code == 0, err
    scores = []
    for image_path, label_path in zip(images, labels, strict=True):
        name = image_path.name.replace("_0000.nii.gz", ".nii.gz")
        pred = sitk.ReadImage(str(out / name) if (out / name).exists() else str(out / image_path.name))
        image, label = sitk.ReadImage(str(image_path)), sitk.ReadImage(str(label_path))
        assert pred.GetSize() == image.GetSize()
        assert np.allclose(pred.GetSpacing(), image.GetSpacing(), atol=1e-5)
        assert np.allclose(pred.GetOrigin(), image.GetOrigin(), atol=1e-4)
        assert np.allclose(pred.GetDirection(), image.GetDirection(), atol=1e-6)
        dice = dice_per_class(sitk.GetArrayFromImage(pred), sitk.GetArrayFromImage(label), num_classes)
        scores.append(float(np.nanmean(list(dice.values()))))
    return scores


def _card_figure(name: str) -> float:
    card = pgl_zoo.get_card(name)
    return float(np.mean(list(card.evaluation["test_dice"].values())))


def test_lungs_model_on_the_shipped_held_out_case(tmp_path, capsys):
    sample = sample_lungs_ct()
    image, label = dict(zip(sample.case_ids, sample.pairs, strict=True))["lung_005"]
    (score,) = _segment_and_score(capsys, "pgl-lungs-ct", [image], [label], tmp_path, 2)
    assert score > _card_figure("pgl-lungs-ct") - 0.05


@pytest.mark.skipif(not (DATA_DIR / "ct" / "lctsc_lungs").is_dir(), reason=f"needs {DATA_DIR}")
def test_lungs_model_matches_its_card_on_the_held_out_lctsc_cases(tmp_path, capsys):
    root = DATA_DIR / "ct" / "lctsc_lungs"
    names = pgl_zoo.get_card("pgl-lungs-ct").training["data"]
    assert "test lung_005..007" in names
    cases = ["lung_005", "lung_006", "lung_007"]
    scores = _segment_and_score(capsys, "pgl-lungs-ct", [root / "imagesTr" / f"{c}.nii.gz" for c in cases],
                                [root / "labelsTr" / f"{c}.nii.gz" for c in cases], tmp_path, 2)
    assert np.mean(scores) > _card_figure("pgl-lungs-ct") - 0.05


@pytest.mark.skipif(not (DATA_DIR / "mri" / "hippocampus").is_dir(), reason=f"needs {DATA_DIR}")
def test_hippocampus_model_matches_its_card_on_the_held_out_cases(tmp_path, capsys):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from study_data import mri_split

    root = DATA_DIR / "mri" / "hippocampus"
    names = [p.name[: -len(".nii.gz")] for p in (root / "imagesTr").glob("*.nii.gz") if not p.name.startswith(".")]
    test, _ = mri_split(names)
    scores = _segment_and_score(capsys, "pgl-hippocampus-mri", [root / "imagesTr" / f"{c}.nii.gz" for c in test],
                                [root / "labelsTr" / f"{c}.nii.gz" for c in test], tmp_path, 3)
    assert np.mean(scores) > _card_figure("pgl-hippocampus-mri") - 0.05


HN_MODEL = "pgl-hn-oars-ct"
OPENKBP = DATA_DIR / "ct" / "openkbp_hn"
ORGANS = ("Brainstem", "SpinalCord", "RightParotid", "LeftParotid", "Esophagus", "Larynx", "Mandible")
# The card's figures are rounded to 0.001 (Dice) and 0.1 mm (HD95); the same weights on the same CPU differ
# beyond that only by floating-point summation order in the sliding window. A changed model, preprocessing
# or evaluation moves them by far more.
DICE_TOLERANCE = 0.01
HD95_TOLERANCE_MM = 1.0


def _segment_and_evaluate(capsys, tmp_path, images: list, labels_dir, structures) -> dict:
    """``pgl-zoo segment --model pgl-hn-oars-ct`` then ``pgl-zoo evaluate`` on partial labels: the report."""
    out = tmp_path / "pred"
    code, _, err = call(capsys, "segment", "--model", HN_MODEL, "-o", str(out), "--no-progress", *map(str, images))
    assert code == 0, err
    labels = tmp_path / "labels.json"  # the card's label names, in the form ``evaluate --labels`` reads
    labels.write_text(json.dumps({"label_names": pgl_zoo.get_card(HN_MODEL).label_names}))
    report = tmp_path / "report"
    code, _, err = call(capsys, "evaluate", "--pred", str(out), "--gt", str(labels_dir), "--labels", str(labels),
                        "--labelled-classes", str(structures), "--hd95", "--out", str(report))
    assert code == 0, err
    return json.loads(report.with_suffix(".json").read_text())


def _link_cases(folder: Path, source: Path, cases: list[str]) -> None:
    folder.mkdir(parents=True)
    for case in cases:
        (folder / f"{case}.nii.gz").symlink_to(source / f"{case}.nii.gz")


def test_hn_card_states_per_organ_figures_case_counts_terms_and_resolution():
    card = pgl_zoo.get_card(HN_MODEL)
    assert card.num_classes == 8 and [card.label_names[str(i)] for i in range(1, 8)] == list(ORGANS)
    ev = card.evaluation
    for metric in ("test_dice", "test_hd95_mm", "test_cases_per_organ", "test_hd95_cases_per_organ"):
        assert set(ev[metric]) == set(ORGANS), metric
    assert all(0 < n <= 39 for n in ev["test_cases_per_organ"].values())
    for organ in ORGANS:  # HD95 needs the organ in both maps: at most the Dice cases, none without a figure
        assert ev["test_hd95_cases_per_organ"][organ] <= ev["test_cases_per_organ"][organ]
        assert (ev["test_hd95_mm"][organ] is None) == (ev["test_hd95_cases_per_organ"][organ] == 0)
    assert np.mean(list(ev["test_dice"].values())) == pytest.approx(ev["test_mean_dice"], abs=1e-3)
    assert "research use" in card.license.lower() and "OpenKBP" in card.training["data"]
    assert "1 mm" in card.notes  # what the data's 4-5 mm in-plane resolution means for a user's CT


@pytest.mark.skipif(not OPENKBP.is_dir(), reason=f"needs {OPENKBP}")
def test_hn_model_reproduces_its_card_on_the_39_openkbp_test_patients(tmp_path, capsys):
    structures = json.loads((OPENKBP / "structures.json").read_text())
    tests = sorted(c for c, info in structures.items() if info["openkbp_split"] == "test-pats")
    assert len(tests) == 39
    _link_cases(tmp_path / "images", OPENKBP / "imagesTr", tests)
    _link_cases(tmp_path / "labels", OPENKBP / "labelsTr", tests)
    report = _segment_and_evaluate(capsys, tmp_path, [tmp_path / "images" / f"{c}.nii.gz" for c in tests],
                                   tmp_path / "labels", OPENKBP / "structures.json")
    ev = pgl_zoo.get_card(HN_MODEL).evaluation
    assert report["cases_per_class"]["dice"] == ev["test_cases_per_organ"]
    assert report["cases_per_class"]["hd95"] == ev["test_hd95_cases_per_organ"]
    for organ in ORGANS:
        assert report["mean"]["dice"][organ] == pytest.approx(ev["test_dice"][organ], abs=DICE_TOLERANCE), organ
        if ev["test_hd95_mm"][organ] is None:
            assert report["mean"]["hd95"][organ] is None, organ
        else:
            assert report["mean"]["hd95"][organ] == pytest.approx(ev["test_hd95_mm"][organ],
                                                                   abs=HD95_TOLERANCE_MM), organ
