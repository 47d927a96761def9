"""The segmentation network: nnU-Net's ``ResidualEncoderUNet`` with pad-and-crop for any input size."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet
from torch import Tensor, nn

from ..arch import cumulative_strides
from .padding import pad_to_multiple


def decode_levels(transpconvs: nn.ModuleList, stages: nn.ModuleList, skips: Sequence[Tensor],
                  finest: int = 0) -> dict[int, Tensor]:
    """Decoder feature maps of levels ``finest`` .. n-2, computed with the library's decoder modules.

    ``skips`` are the encoder's maps, highest resolution first (n of them). Decoder level ``i``
    has the resolution and width of encoder map ``i``; it is the output of the library's decoder
    stage ``n - 2 - i`` (its stages run from the bottleneck up). Stops early at ``finest``, so
    PGL's local loss on coarse levels does not pay for the fine ones.
    """
    n = len(skips)
    x, out = skips[-1], {}
    for s in range(n - 1 - finest):
        x = transpconvs[s](x)
        x = stages[s](torch.cat((x, skips[-(s + 2)]), 1))
        out[n - 2 - s] = x
    return out


class UNet3d(ResidualEncoderUNet):
    """nnU-Net's ``ResidualEncoderUNet`` (deep supervision off) that accepts any input size.

    ``forward`` maps (N, C, z, y, x) to logits (N, num_classes, z, y, x) of the same spatial
    size. Inputs whose size is not a multiple of the total stride are zero-padded at the far end
    of each axis and the logits cropped back, so any size (e.g. 40 x 56 x 72) works. The module
    tree, and so every state-dict key, is the library's: the network nnU-Net builds from the same
    plans loads this one's weights and the other way round. The segmentation head is the
    decoder's ``seg_layers`` (only the last one is used without deep supervision).

    Build it with :func:`pgl_zoo.nets.build_unet` from a card's ``arch``.
    """

    def __init__(self, input_channels: int, num_classes: int, **arch_kwargs: Any) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        super().__init__(input_channels, **arch_kwargs, num_classes=num_classes, deep_supervision=False)
        self.num_classes = int(num_classes)

    @property
    def total_stride(self) -> tuple[int, int, int]:
        return cumulative_strides(self.encoder.strides)[-1]

    def forward_features(self, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """Encoder maps and decoder maps, both highest resolution first (x must fit the stride)."""
        skips = self.encoder(x)
        levels = decode_levels(self.decoder.transpconvs, self.decoder.stages, skips)
        return skips, [levels[i] for i in range(len(levels))]

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[2:]
        logits = super().forward(pad_to_multiple(x, self.total_stride))
        return logits[:, :, : size[0], : size[1], : size[2]]

    def encoder_parameters(self) -> Iterator[nn.Parameter]:
        return self.encoder.parameters()

    def decoder_parameters(self) -> Iterator[nn.Parameter]:
        """The decoder's own parameters: upsampling and merge convolutions (not the encoder it refers to)."""
        yield from self.decoder.transpconvs.parameters()
        yield from self.decoder.stages.parameters()

    def head_parameters(self) -> Iterator[nn.Parameter]:
        """The 1x1x1 segmentation layers."""
        return self.decoder.seg_layers.parameters()

    def freeze_encoder(self, frozen: bool = True) -> None:
        """Stop (or restart) gradient updates of the encoder's parameters."""
        for parameter in self.encoder.parameters():
            parameter.requires_grad_(not frozen)
