"""Partial labels: the marginal loss, the labelled-classes file, and scoring only where a class is contoured."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pgl_zoo.errors import DataError
from pgl_zoo.finetune.losses import DiceCELoss
from pgl_zoo.partial_labels import labelled_classes_from, read_labelled_classes

NAMES = {"0": "background", "1": "Brainstem", "2": "SpinalCord", "3": "Mandible"}


def _batch(seed=0, n=2, k=4, shape=(6, 7, 8)):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, *shape, generator=g, requires_grad=True)
    target = torch.randint(0, k, (n, *shape), generator=g)
    return logits, target


def test_with_every_class_contoured_the_marginal_loss_is_the_ordinary_loss():
    logits, target = _batch()
    loss = DiceCELoss()
    everything = torch.ones(2, 4, dtype=torch.bool)
    assert torch.allclose(loss(logits, target, everything), loss(logits, target), atol=1e-6)


def test_a_withheld_class_gets_no_gradient_pushing_its_logit_down_where_that_organ_is():
    """Case 0 has organ 2 drawn in its true anatomy, but the file says organ 2 was not contoured there: its
    voxels are 0 in the label map. The ordinary loss pushes logit 2 down at those voxels (positive gradient);
    the marginal loss must not (gradient <= 0), in the CE and in the Dice term, alone and together."""
    logits, target = _batch(seed=1)
    organ = target[0] == 2
    target = target.clone()
    target[0][organ] = 0  # uncontoured: written as background in the label map
    labelled = torch.ones(2, 4, dtype=torch.bool)
    labelled[0, 2] = False
    for weights in ((1.0, 0.0), (0.0, 1.0), (1.0, 1.0)):
        loss_fn = DiceCELoss(dice_weight=weights[0], ce_weight=weights[1])
        (grad,) = torch.autograd.grad(loss_fn(logits, target, labelled), logits)
        assert (grad[0, 2][organ] <= 1e-12).all(), weights
        (ordinary,) = torch.autograd.grad(loss_fn(logits, target), logits)
        if weights[1]:
            assert (ordinary[0, 2][organ] > 0).all(), weights  # what the marginal loss avoids
    # the other case contours organ 2: there the loss still trains it as usual
    (grad,) = torch.autograd.grad(DiceCELoss(dice_weight=0.0)(logits, target, labelled), logits)
    assert (grad[1, 2][target[1] != 2] > 0).all()  # pushed down where case 1 says "not organ 2"


def test_a_class_no_sample_contours_is_left_out_of_the_dice_mean():
    logits, target = _batch(seed=2)
    target[target == 3] = 0
    labelled = torch.ones(2, 4, dtype=torch.bool)
    labelled[:, 3] = False
    with_three = DiceCELoss(ce_weight=0.0)(logits, target, labelled)
    # the same loss computed on the three classes alone: class 3's probability merged into background
    merged = torch.cat([torch.logsumexp(torch.stack([logits[:, 0], logits[:, 3]], 1), 1, keepdim=True),
                        logits[:, 1:3]], dim=1)
    assert torch.allclose(with_three, DiceCELoss(ce_weight=0.0)(merged, target), atol=1e-6)


def test_the_labelled_classes_file_in_both_forms(tmp_path):
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"a": ["Brainstem", 3], "b": []}))
    structures = tmp_path / "structures.json"
    structures.write_text(json.dumps({"a": {"openkbp_split": "train-pats", "structures": ["Brainstem", "Mandible"]},
                                      "b": {"structures": []}}))
    for path in (plain, structures):
        lc = read_labelled_classes(path, NAMES, 4)
        assert lc.of("a") == {0, 1, 3} and lc.of("b") == {0}
        assert lc.mask("a").tolist() == [True, True, False, True]
    with pytest.raises(DataError, match="not listed"):
        read_labelled_classes(plain, NAMES, 4).check_cases(["a", "b", "c"])
    with pytest.raises(DataError, match="unknown class 'Larynx'"):
        labelled_classes_from({"a": ["Larynx"]}, NAMES, 4)
    with pytest.raises(DataError, match="class id 9"):
        labelled_classes_from({"a": [9]}, NAMES, 4)
    lc = labelled_classes_from({"a": ["Brainstem"]}, NAMES, 4)
    lc.check_label("a", np.array([0, 1, 1]))
    with pytest.raises(DataError, match=r"class\(es\) \[2\]"):
        lc.check_label("a", np.array([0, 1, 2]))


def _write(path, array):
    import SimpleITK as sitk

    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(array.astype(np.uint8)), str(path))


def test_evaluate_scores_a_class_only_where_it_is_contoured(tmp_path, capsys):
    from _cli import call

    rng = np.random.default_rng(0)
    truths = {}
    for case in ("a", "b", "c"):
        gt = rng.integers(0, 3, (6, 6, 6))
        pred = gt.copy()
        pred[0] = 0  # imperfect
        if case == "b":
            gt[gt == 2] = 0  # organ 2 not contoured in b: the prediction of 2 there is not an error
        truths[case] = gt
        _write(tmp_path / "gt" / f"{case}.nii.gz", gt)
        _write(tmp_path / "pred" / f"{case}.nii.gz", pred)
    (tmp_path / "lc.json").write_text(json.dumps({"a": [1, 2], "b": [1], "c": [1, 2]}))
    code, out, err = call(capsys, "evaluate", "--pred", tmp_path / "pred", "--gt", tmp_path / "gt", "--num-classes",
                          3, "--labelled-classes", tmp_path / "lc.json", "--out", tmp_path / "report")
    assert code == 0, err
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["cases_per_class"]["dice"] == {"class_1": 3, "class_2": 2}
    assert report["cases"]["b"]["dice"]["class_2"] is None and report["not_contoured"] == {"a": [], "b": ["class_2"],
                                                                                            "c": []}
    expected = np.mean([report["cases"][c]["dice"]["class_2"] for c in ("a", "c")])
    assert abs(report["mean"]["dice"]["class_2"] - expected) < 1e-6
    # without the file, b's uncontoured organ counts as a false positive and lowers the mean
    code, _, err = call(capsys, "evaluate", "--pred", tmp_path / "pred", "--gt", tmp_path / "gt", "--num-classes", 3,
                        "--out", tmp_path / "plain")
    plain = json.loads((tmp_path / "plain.json").read_text())
    assert plain["mean"]["dice"]["class_2"] < report["mean"]["dice"]["class_2"]
    # a case missing from the file is refused, not taken as fully contoured
    (tmp_path / "lc2.json").write_text(json.dumps({"a": [1, 2], "b": [1]}))
    code, _, err = call(capsys, "evaluate", "--pred", tmp_path / "pred", "--gt", tmp_path / "gt", "--num-classes",
                        3, "--labelled-classes", tmp_path / "lc2.json", "--out", tmp_path / "r2")
    assert code != 0 and "not listed: c" in err and "Traceback" not in err


def test_finetune_with_partial_labels_trains_and_validates_only_contoured_classes(tmp_path):
    from _seg_helpers import HIPPOCAMPUS, first_cases, hippocampus_subset, save_micro_encoder

    from pgl_zoo.finetune import FinetuneConfig, finetune

    if not HIPPOCAMPUS.is_dir():
        pytest.skip(f"real data folder {HIPPOCAMPUS} is absent")
    names = first_cases(4)
    data = hippocampus_subset(tmp_path / "data", names)
    # the validation case withholds class 2 (its voxels become 0 in the label map, as in radiotherapy data)
    import SimpleITK as sitk

    label_path = next((data / "labelsTr").glob(f"{names[3]}*"))
    image = sitk.ReadImage(str(label_path))
    array = sitk.GetArrayFromImage(image)
    array[array == 2] = 0
    withheld = sitk.GetImageFromArray(array)
    withheld.CopyInformation(image)
    sitk.WriteImage(withheld, str(label_path))
    labelled = {n: ["1", "2"] for n in names[:3]} | {names[3]: ["1"]}
    torch.set_num_threads(1)
    config = FinetuneConfig(out=tmp_path / "run", num_classes=3, data=data, val_cases=names[3:],
                            encoder=save_micro_encoder(tmp_path / "enc"), labelled_classes=labelled, epochs=1,
                            steps_per_epoch=2, batch_size=2, spacing_xyz_mm="native", window="none",
                            patch_size_zyx=(16, 16, 16), progress=False)
    result = finetune(config)
    dice = result.history[0]["val_dice"]
    assert not np.isnan(dice["class_1"]) and np.isnan(dice["class_2"])  # class 2 is not scored where not drawn
    card = json.loads((result.model_dir / "card.json").read_text())
    assert "marginal" in card["training"]["method"]
    # a label map holding a class the file calls uncontoured is refused before training
    labelled[names[0]] = ["1"]
    with pytest.raises(DataError, match="not listed as contoured"):
        finetune(FinetuneConfig(**{**config.__dict__, "out": tmp_path / "run2", "labelled_classes": labelled}))
