"""Collapse indicators of PGL's two branches, logged every step.

A BYOL-style network can collapse: every input maps to the same projection, the loss still falls,
and nothing useful is learnt. The indicators are standard deviations of the *l2-normalised*
projections of the target network (what the online predictors learn to match):

* ``std_global``: per output dimension, the standard deviation over the batch (both views), then
  the mean over dimensions. 0 when every sample has the same projection; about ``1 / sqrt(D)``
  for spread-out unit vectors in D dimensions.
* ``std_local_voxels``: per channel, the standard deviation over samples and voxels of the local
  maps, mean over channels (and levels). 0 when every voxel has the same projection.
* ``std_local_channels``: per voxel, the standard deviation over channels, mean over voxels.
  0 when all channels are equal (the vector points along the diagonal).

A branch is flagged ``collapsed`` when its across-sample (or across-voxel) indicator times
``sqrt(D)`` falls below ``COLLAPSE_THRESHOLD`` (0.05): that is, 20 x below the value of random unit vectors.
The threshold is a project choice.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor

COLLAPSE_THRESHOLD = 0.05


def std_over_samples(z: Tensor) -> float:
    """Mean over dimensions of the std over rows of the row-normalised ``z`` (N, D)."""
    u = F.normalize(z.detach().float(), dim=1)
    return float(u.std(dim=0, unbiased=False).mean()) if u.shape[0] > 1 else 0.0


def local_stds(z: Tensor) -> tuple[float, float]:
    """(std over samples and voxels, std over channels) of the channel-normalised maps (N, C, z, y, x)."""
    u = F.normalize(z.detach().float(), dim=1)
    c = u.shape[1]
    flat = u.transpose(0, 1).reshape(c, -1)  # (C, N * voxels)
    over_voxels = float(flat.std(dim=1, unbiased=False).mean()) if flat.shape[1] > 1 else 0.0
    over_channels = float(flat.std(dim=0, unbiased=False).mean()) if c > 1 else 0.0
    return over_voxels, over_channels


def collapse_indicators(z_global: Tensor, z_local: dict[int, Tensor]) -> dict[str, float | bool]:
    """The indicators above for a target network's global (N, D) and local {level: (N, C, z, y, x)}
    projections, and the ``collapsed_global`` / ``collapsed_local`` flags."""
    d = z_global.shape[1]
    out: dict[str, float | bool] = {"std_global": std_over_samples(z_global)}
    out["collapsed_global"] = out["std_global"] * math.sqrt(d) < COLLAPSE_THRESHOLD
    if z_local:
        pairs = [local_stds(m) for m in z_local.values()]
        widths = [m.shape[1] for m in z_local.values()]
        out["std_local_voxels"] = sum(p[0] for p in pairs) / len(pairs)
        out["std_local_channels"] = sum(p[1] for p in pairs) / len(pairs)
        out["collapsed_local"] = any(p[0] * math.sqrt(c) < COLLAPSE_THRESHOLD
                                     for p, c in zip(pairs, widths, strict=True))
    return out
