"""The zoo's task models segment real scans as well as their cards say, through ``pgl-zoo segment``,
with label maps on each input's exact grid.

``pgl-lungs-ct`` is checked on the shipped sample case lung_005 (3 mm; held out from its training)
everywhere, and on the study's three held-out LCTSC cases at their original resolution when
``../shared/data`` is present; ``pgl-hippocampus-mri`` on the 30 held-out hippocampus cases (needs
``../shared``). The bar: Dice above the card's figure minus 0.05.
"""

from __future__ import annotations

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
