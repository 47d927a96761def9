"""The frozen-encoder probe: a linear map of the encoder's multi-scale features, on the input grid.

``pgl-zoo finetune --freeze-encoder`` trains it, and the transfer study's probe (``benchmarks/transfer_hn.py``)
is the same function fitted on cached features. Why this head: it measures what the encoder's features
already hold (a linear read-out, the standard self-supervised probe) at every scale a segmentation needs
(fine stages for boundaries, coarse ones for context), and it is cheap enough to fit hundreds of times
on a CPU. A decoder trained on frozen features would add capacity that can make up for weak features.

The function: logits = sum over encoder stages ``l`` of ``up_l(W_l f_l) + b``, where ``f_l`` is stage
``l``'s map, ``W_l`` a 1x1x1 convolution to the classes and ``up_l`` trilinear upsampling to the input
grid (``align_corners=False``). Upsampling is linear and commutes with a 1x1x1 map, so this equals one
linear map of all stages' features brought to the input grid, computed at each stage's own resolution.
Arrays are (N, C, z, y, x).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from .encoder import ResidualEncoder3d


def upsampled_scores(level_scores: Sequence[Tensor], size: Sequence[int]) -> Tensor:
    """Sum of per-stage class scores (N, K, z_l, y_l, x_l), each upsampled trilinearly to ``size`` (z, y, x)."""
    total = None
    for scores in level_scores:
        up = scores if tuple(scores.shape[2:]) == tuple(size) else F.interpolate(
            scores, size=tuple(size), mode="trilinear", align_corners=False)
        total = up if total is None else total + up
    return total


class LinearProbe3d(nn.Module):
    """An encoder and one 1x1x1 convolution per stage (the bias on the first only); see the module docstring.

    Parameter names: ``encoder.*`` (those of :class:`pgl_zoo.nets.UNet3d`'s encoder) and ``head.{l}.*``,
    so a zoo file's encoder loads as it does into a U-Net and the head is the ``head`` part.
    """

    def __init__(self, encoder: ResidualEncoder3d, num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.num_classes = int(num_classes)
        self.head = nn.ModuleList(nn.Conv3d(w, self.num_classes, 1, bias=(i == 0))
                                  for i, w in enumerate(encoder.widths))

    @property
    def total_stride(self) -> tuple[int, int, int]:
        return self.encoder.total_stride

    def level_scores(self, features: Sequence[Tensor]) -> list[Tensor]:
        """Each stage's class scores at its own resolution (``features``: the encoder's maps, finest first)."""
        return [conv(f) for conv, f in zip(self.head, features, strict=True)]

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[2:]
        features = self.encoder(x)  # padded to a multiple of the total stride at the far end of each axis
        padded = [s * c for s, c in zip(features[-1].shape[2:], self.total_stride, strict=True)]
        logits = upsampled_scores(self.level_scores(features), padded)
        return logits[:, :, : size[0], : size[1], : size[2]]

    def encoder_parameters(self) -> Iterator[nn.Parameter]:
        return self.encoder.parameters()

    def decoder_parameters(self) -> Iterator[nn.Parameter]:
        return iter(())

    def head_parameters(self) -> Iterator[nn.Parameter]:
        return self.head.parameters()

    def freeze_encoder(self, frozen: bool = True) -> None:
        for parameter in self.encoder.parameters():
            parameter.requires_grad_(not frozen)

    def train(self, mode: bool = True) -> LinearProbe3d:
        """A frozen encoder stays in eval mode (its normalisation behaves as when its features were cached)."""
        super().train(mode)
        if not any(p.requires_grad for p in self.encoder.parameters()):
            self.encoder.eval()
        return self


def build_probe(arch: dict, num_classes: int, in_channels: int | None = None) -> LinearProbe3d:
    """A probe on a card's ``arch`` (the encoder nnU-Net-initialised, the head PyTorch's default init)."""
    from . import build_encoder

    return LinearProbe3d(build_encoder(arch, in_channels), num_classes)
