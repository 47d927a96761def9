"""Dice agrees with MONAI's DiceMetric; the Dice + CE loss agrees with MONAI's DiceCELoss; HD95 sanity."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pgl_zoo.finetune.losses import DiceCELoss
from pgl_zoo.metrics import dice_per_class, hd95_per_class, nanmean

monai = pytest.importorskip("monai")


def _onehot(label: np.ndarray, k: int) -> torch.Tensor:
    return F.one_hot(torch.from_numpy(label.astype(np.int64)), k).permute(3, 0, 1, 2)[None].float()


def _cases():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 4, size=(12, 14, 10))
    pred = np.where(rng.random(gt.shape) < 0.7, gt, rng.integers(0, 4, size=gt.shape))
    yield pred, gt
    gt2, pred2 = gt.copy(), pred.copy()
    gt2[gt2 == 3] = 0  # class 3 absent from the ground truth but predicted: Dice 0
    yield pred2, gt2
    pred3 = pred2.copy()
    pred3[pred3 == 3] = 0  # class 3 absent from both
    yield pred3, gt2


@pytest.mark.parametrize("case", list(range(3)))
def test_dice_matches_monai_dice_metric(case):
    from monai.metrics import DiceMetric

    pred, gt = list(_cases())[case]
    ours = dice_per_class(pred, gt, 4, empty_value=1.0)  # MONAI scores "both empty" as 1 (ignore_empty=False)
    metric = DiceMetric(include_background=False, reduction="none", ignore_empty=False)
    expected = metric(_onehot(pred, 4), _onehot(gt, 4))[0].numpy()
    assert np.allclose([ours[c] for c in (1, 2, 3)], expected, atol=1e-6)


def test_dice_conventions():
    gt = np.zeros((4, 4, 4), int)
    gt[1:3, 1:3, 1:3] = 1
    assert dice_per_class(gt, gt, 3) == {1: 1.0, 2: pytest.approx(float("nan"), nan_ok=True)}
    assert math.isnan(dice_per_class(gt, gt, 3)[2])  # absent from both: NaN, left out of means
    assert nanmean([1.0, float("nan"), 0.5]) == 0.75
    assert dice_per_class(np.zeros_like(gt), gt, 2)[1] == 0.0


def test_hd95_of_a_shifted_cube_is_the_shift_in_mm():
    a = np.zeros((20, 20, 20), int)
    a[5:15, 5:15, 5:15] = 1
    b = np.roll(a, 2, axis=2)  # 2 voxels along x
    assert hd95_per_class(a, a, 2)[1] == 0.0
    assert hd95_per_class(a, b, 2, (1.0, 1.0, 1.0))[1] == pytest.approx(2.0)
    assert hd95_per_class(a, b, 2, (0.5, 1.0, 1.0))[1] == pytest.approx(1.0)
    assert math.isnan(hd95_per_class(a, np.zeros_like(a), 2)[1])


@pytest.mark.parametrize("include_background", [False, True])
def test_dice_ce_loss_matches_monai(include_background):
    from monai.losses import DiceCELoss as MonaiDiceCELoss

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 8, 10, 6, generator=generator, requires_grad=True)
    target = torch.randint(0, 3, (2, 8, 10, 6), generator=generator)
    ours = DiceCELoss(include_background=include_background)(logits, target)
    reference = MonaiDiceCELoss(to_onehot_y=True, softmax=True, batch=True, smooth_nr=1e-5, smooth_dr=1e-5,
                                include_background=include_background)(logits, target[:, None])
    assert torch.allclose(ours, reference, atol=1e-5)


def test_hd95_of_real_organs_shifted_is_at_most_the_shift():
    """The seven organs of a real 128^3 head-and-neck label (sample patient hn_247) against themselves and
    shifted two voxels along x: 0 mm, and at most the shift (2 x 4.69 mm) for every organ. (HD95 once read
    a freed image through a NumPy view and gave hundreds of mm here.)"""
    import SimpleITK as sitk

    from pgl_zoo.datasets import sample_hn_ct

    sample = sample_hn_ct()
    label = sitk.ReadImage(str(dict(zip(sample.case_ids, sample.pairs, strict=True))["hn_247"][1]))
    gt = sitk.GetArrayFromImage(label)
    spacing = label.GetSpacing()
    assert set(np.unique(gt).tolist()) == set(range(8))
    shifted = np.roll(gt, 2, axis=2)
    for _ in range(3):  # repeated: the freed memory was reused by later allocations, not always at once
        assert all(v == 0.0 for v in hd95_per_class(gt, gt, 8, spacing).values())
        distances = hd95_per_class(gt, shifted, 8, spacing)
        assert all(0.0 < d <= 2 * spacing[0] + 1e-3 for d in distances.values()), distances
