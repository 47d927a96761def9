"""Dice + cross-entropy loss for segmentation logits (N, K, z, y, x) against labels (N, z, y, x)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["DiceCELoss"]


class DiceCELoss(nn.Module):
    """``dice_weight * soft Dice loss + ce_weight * cross-entropy``.

    The soft Dice is computed on softmax probabilities, per class over the whole batch ("batch Dice",
    as nnU-Net does), averaged over the foreground classes (background excluded unless
    ``include_background``): ``1 - (2 sum(p g) + smooth) / (sum(p) + sum(g) + smooth)``.
    It equals MONAI's ``DiceCELoss(to_onehot_y=True, softmax=True, batch=True, smooth_nr=smooth,
    smooth_dr=smooth, include_background=...)``; the cross-entropy always covers every class.
    """

    def __init__(self, include_background: bool = False, smooth: float = 1e-5, dice_weight: float = 1.0,
                 ce_weight: float = 1.0) -> None:
        super().__init__()
        self.include_background = include_background
        self.smooth = smooth
        self.dice_weight = dice_weight
        self.ce_weight = ce_weight

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """``logits``: (N, K, z, y, x) float; ``target``: (N, z, y, x) integer class indices."""
        target = target.long()
        ce = F.cross_entropy(logits, target)
        probs = torch.softmax(logits, dim=1)
        onehot = F.one_hot(target, logits.shape[1]).movedim(-1, 1).to(probs.dtype)
        if not self.include_background and logits.shape[1] > 1:
            probs, onehot = probs[:, 1:], onehot[:, 1:]
        dims = (0, *range(2, logits.ndim))
        intersection = (probs * onehot).sum(dims)
        denominator = probs.sum(dims) + onehot.sum(dims)
        dice = 1.0 - (2.0 * intersection + self.smooth) / (denominator + self.smooth)
        return self.dice_weight * dice.mean() + self.ce_weight * ce
