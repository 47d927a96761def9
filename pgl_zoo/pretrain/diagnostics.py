"""Collapse indicators of PGL's two branches, logged with the losses (every ``--log-every`` steps).

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

import torch
import torch.nn.functional as F
from torch import Tensor

COLLAPSE_THRESHOLD = 0.05


def std_over_samples(z: Tensor) -> Tensor:
    """Mean over dimensions of the std over rows of the row-normalised ``z`` (N, D); a 0-d tensor on z's device."""
    u = F.normalize(z.detach().float(), dim=1)
    return u.std(dim=0, unbiased=False).mean() if u.shape[0] > 1 else u.new_zeros(())


def local_stds(z: Tensor) -> tuple[Tensor, Tensor]:
    """(std over samples and voxels, std over channels) of the channel-normalised maps (N, C, z, y, x);
    0-d tensors on z's device."""
    u = F.normalize(z.detach().float(), dim=1)
    c = u.shape[1]
    flat = u.transpose(0, 1).reshape(c, -1)  # (C, N * voxels)
    over_voxels = flat.std(dim=1, unbiased=False).mean() if flat.shape[1] > 1 else u.new_zeros(())
    over_channels = flat.std(dim=0, unbiased=False).mean() if c > 1 else u.new_zeros(())
    return over_voxels, over_channels


def collapse_indicators(z_global: Tensor, z_local: dict[int, Tensor]) -> dict[str, float | bool]:
    """The indicators above for a target network's global (N, D) and local {level: (N, C, z, y, x)}
    projections, and the ``collapsed_global`` / ``collapsed_local`` flags. All of them come to the host
    in one copy (one GPU sync)."""
    d = z_global.shape[1]
    tensors = [std_over_samples(z_global)]
    for m in z_local.values():
        tensors.extend(local_stds(m))
    values = torch.stack(tensors).tolist()
    out: dict[str, float | bool] = {"std_global": values[0]}
    out["collapsed_global"] = out["std_global"] * math.sqrt(d) < COLLAPSE_THRESHOLD
    if z_local:
        pairs = [(values[1 + 2 * i], values[2 + 2 * i]) for i in range(len(z_local))]
        widths = [m.shape[1] for m in z_local.values()]
        out["std_local_voxels"] = sum(p[0] for p in pairs) / len(pairs)
        out["std_local_channels"] = sum(p[1] for p in pairs) / len(pairs)
        out["collapsed_local"] = any(p[0] * math.sqrt(c) < COLLAPSE_THRESHOLD
                                     for p, c in zip(pairs, widths, strict=True))
    return out
