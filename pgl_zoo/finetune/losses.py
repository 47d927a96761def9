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

    def forward(self, logits: Tensor, target: Tensor, labelled: Tensor | None = None) -> Tensor:
        """``logits``: (N, K, z, y, x) float; ``target``: (N, z, y, x) integer class indices.

        ``labelled`` (optional, (N, K) bool): the classes contoured in each sample's case (partial labels,
        :mod:`pgl_zoo.partial_labels`). Then the loss is the *marginal* loss: for each sample, the
        probabilities of its uncontoured classes are merged into background (log-sum-exp of their
        log-probabilities) in both terms, and the Dice of a class is taken over the samples that contour it
        (a class no sample contours is left out of the mean). A voxel of an uncontoured organ is labelled 0
        in its case, and the loss then asks only that it be "background or an uncontoured class": no
        gradient pushes that class's logit down there. Every target must be a contoured class.
        """
        target = target.long()
        n_classes = logits.shape[1]
        spatial = (1,) * (logits.ndim - 2)
        if labelled is None:
            ce = F.cross_entropy(logits, target)
            probs = torch.softmax(logits, dim=1)
            weight = None
        else:
            labelled = labelled.to(device=logits.device, dtype=torch.bool).clone()
            labelled[:, 0] = True
            merged_into_background = ~labelled
            merged_into_background[:, 0] = True
            log_probs = torch.log_softmax(logits, dim=1)
            background = torch.logsumexp(log_probs.masked_fill(~merged_into_background.view(*labelled.shape, *spatial),
                                                               float("-inf")), dim=1, keepdim=True)
            others = log_probs[:, 1:].masked_fill(~labelled[:, 1:].view(labelled.shape[0], -1, *spatial),
                                                  float("-inf"))
            marginal = torch.cat([background, others], dim=1)
            ce = F.nll_loss(marginal, target)
            probs = marginal.exp()
            weight = labelled.to(probs.dtype)
        onehot = F.one_hot(target, n_classes).movedim(-1, 1).to(probs.dtype)
        first = 0 if self.include_background or n_classes == 1 else 1
        probs, onehot = probs[:, first:], onehot[:, first:]
        if weight is not None:  # each sample counts only for the classes it contours
            weight = weight[:, first:]
            probs, onehot = probs * weight.view(*weight.shape, *spatial), onehot * weight.view(*weight.shape, *spatial)
        dims = (0, *range(2, logits.ndim))
        intersection = (probs * onehot).sum(dims)
        denominator = probs.sum(dims) + onehot.sum(dims)
        dice = 1.0 - (2.0 * intersection + self.smooth) / (denominator + self.smooth)
        if weight is not None:
            contoured = weight.sum(0) > 0
            dice = dice[contoured] if bool(contoured.any()) else dice.new_zeros(1)
        return self.dice_weight * dice.mean() + self.ce_weight * ce
