"""Losses of PGL: the global BYOL loss and the voxel-wise local loss, both ``2 - 2 cos``.

Symmetrisation averages the two directions (view a predicts view b's target and vice versa), so
each loss lies in [0, 4]; ``L = L_global + lambda * L_local`` (lambda = 0: the BYOL baseline).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def cosine_loss(p: Tensor, z: Tensor, dim: int = 1) -> Tensor:
    """``2 - 2 cos(p, z)`` along ``dim`` (the channel axis), unreduced. ``z`` is not detached here."""
    return 2 - 2 * F.cosine_similarity(p.float(), z.float(), dim=dim, eps=1e-6)


def global_loss(p_a: Tensor, p_b: Tensor, z_a: Tensor, z_b: Tensor) -> Tensor:
    """Symmetrised BYOL loss for (N, D) predictions ``p`` and target projections ``z`` (detached)."""
    return 0.5 * (cosine_loss(p_a, z_b.detach()).mean() + cosine_loss(p_b, z_a.detach()).mean())


def local_loss(p_a: Tensor, p_b: Tensor, z_a: Tensor, z_b: Tensor, valid: Tensor | None = None) -> Tensor:
    """Symmetrised voxel-wise loss on *aligned* maps (N, C, z, y, x): voxel (i, j, k) of every map is
    the same source location. Mean over voxels, then over the samples flagged ``valid`` (N,)."""
    per_sample = 0.5 * (cosine_loss(p_a, z_b.detach()).flatten(1).mean(1)
                        + cosine_loss(p_b, z_a.detach()).flatten(1).mean(1))
    if valid is None:
        return per_sample.mean()
    weights = valid.to(per_sample.dtype)
    return (per_sample * weights).sum() / weights.sum().clamp(min=1.0)


def total_loss(l_global: Tensor, l_local: Tensor | None, local_weight: float) -> Tensor:
    """``L_global + local_weight * L_local`` (the local term is skipped when the weight is 0)."""
    if l_local is None or local_weight == 0:
        return l_global
    return l_global + local_weight * l_local


def cosine_momentum(step: int, total_steps: int, base: float = 0.996) -> float:
    """BYOL's EMA momentum: ``1 - (1 - base) * (cos(pi * step / total) + 1) / 2``, base -> 1."""
    progress = min(max(step / max(total_steps, 1), 0.0), 1.0)
    return 1 - (1 - base) * (torch.cos(torch.tensor(torch.pi * progress)).item() + 1) / 2
