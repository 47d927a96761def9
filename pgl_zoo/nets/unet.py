"""Decoder and segmentation network (encoder + decoder + 1x1x1 head)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .blocks import ConvNormAct
from .encoder import ResidualEncoder3d


class UNetDecoder(nn.Module):
    """U-Net decoder: transposed-convolution upsampling, skip concatenation, two conv blocks per level.

    ``forward(features)`` takes the encoder's maps (highest resolution first) and returns one
    decoded map per level except the bottleneck, highest resolution first: map ``i`` has
    ``widths[i]`` channels at the resolution of encoder map ``i``.
    """

    def __init__(self, widths: Sequence[int], strides: Sequence[Sequence[int]]) -> None:
        super().__init__()
        widths = [int(w) for w in widths]
        self.widths = widths
        self.up = nn.ModuleList(
            nn.ConvTranspose3d(widths[i + 1], widths[i], kernel_size=tuple(strides[i + 1]),
                               stride=tuple(strides[i + 1]), bias=False)
            for i in range(len(widths) - 1)
        )
        self.blocks = nn.ModuleList(
            nn.Sequential(ConvNormAct(2 * widths[i], widths[i]), ConvNormAct(widths[i], widths[i]))
            for i in range(len(widths) - 1)
        )

    def forward(self, features: Sequence[Tensor]) -> list[Tensor]:
        x = features[-1]
        decoded: list[Tensor] = []
        for i in range(len(features) - 2, -1, -1):
            x = self.up[i](x)
            x = self.blocks[i](torch.cat([x, features[i]], dim=1))
            decoded.append(x)
        return decoded[::-1]


class UNet3d(nn.Module):
    """Segmentation network: :class:`ResidualEncoder3d` + :class:`UNetDecoder` + 1x1x1 head.

    ``forward`` maps (N, in_channels, z, y, x) to logits (N, num_classes, z, y, x) of the same
    spatial size. Inputs whose size is not a multiple of the total stride are zero-padded at the
    far end of each axis and the logits cropped back, so any size (e.g. 40 x 56 x 72) works.
    State-dict keys of ``self.encoder`` equal those of a standalone encoder.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 1,
        widths: Sequence[int] = (32, 64, 128, 256, 320),
        blocks: Sequence[int] = (1, 2, 2, 2, 2),
        strides: Sequence[Sequence[int] | int] = ((1, 1, 1), (1, 2, 2), (2, 2, 2), (2, 2, 2), (2, 2, 2)),
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.encoder = ResidualEncoder3d(in_channels, widths, blocks, strides)
        self.decoder = UNetDecoder(self.encoder.widths, self.encoder.strides)
        self.head = nn.Conv3d(self.encoder.widths[0], self.num_classes, 1)

    def forward_features(self, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """Encoder maps and decoder maps, both highest resolution first (x must fit the stride)."""
        features = self.encoder(x)
        return features, self.decoder(features)

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[2:]
        stride = self.encoder.total_stride
        pad = [(-n) % s for n, s in zip(size, stride, strict=True)]
        if any(pad):
            # F.pad takes (x_lo, x_hi, y_lo, y_hi, z_lo, z_hi)
            x = F.pad(x, (0, pad[2], 0, pad[1], 0, pad[0]))
        _, decoded = self.forward_features(x)
        logits = self.head(decoded[0])
        if any(pad):
            logits = logits[:, :, : size[0], : size[1], : size[2]]
        return logits

    def freeze_encoder(self, frozen: bool = True) -> None:
        """Stop (or restart) gradient updates of the encoder's parameters."""
        for parameter in self.encoder.parameters():
            parameter.requires_grad_(not frozen)
