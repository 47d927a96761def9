"""Projector / predictor heads (BYOL style): a global MLP and a local 1x1x1-conv version.

Widths are project defaults (the paper does not state them); :mod:`pgl_zoo.pretrain.model` chooses them
(:class:`~pgl_zoo.pretrain.model.OnlineNetwork`).
"""

from __future__ import annotations

from torch import Tensor, nn


class MLPHead(nn.Sequential):
    """Linear -> BatchNorm1d -> ReLU -> Linear, on (N, in_dim) vectors (needs N >= 2 in training)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__(
            nn.Linear(in_dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )


class ConvHead(nn.Sequential):
    """The voxel-wise counterpart of :class:`MLPHead` on (N, C, z, y, x) maps: 1x1x1 conv ->
    BatchNorm3d -> ReLU -> 1x1x1 conv (applied independently at every voxel)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__(
            nn.Conv3d(in_dim, hidden_dim, 1), nn.BatchNorm3d(hidden_dim), nn.ReLU(inplace=True),
            nn.Conv3d(hidden_dim, out_dim, 1),
        )


def global_pool(x: Tensor) -> Tensor:
    """(N, C, z, y, x) -> (N, C) global average."""
    return x.mean(dim=(2, 3, 4))
