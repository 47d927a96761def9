"""The residual 3D encoder that the zoo ships."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from .blocks import ConvNormAct, ResidualBlock, zyx_triple

STEM_KEY = "stem.conv.weight"  # the only weight whose shape depends on in_channels


class ResidualEncoder3d(nn.Module):
    """Residual 3D encoder: a stem convolution then one stage of residual blocks per width.

    Input: (N, in_channels, z, y, x). Output: a list with one feature map per stage, highest
    resolution first; map ``i`` has ``widths[i]`` channels and is downsampled by
    ``cumulative_strides[i]`` (z, y, x) relative to the input. The first block of stage ``i``
    downsamples by ``strides[i]`` with a strided convolution.

    Example:
        >>> enc = ResidualEncoder3d(1, [8, 16], [1, 1], [[1, 1, 1], [2, 2, 2]])
        >>> [f.shape for f in enc(torch.zeros(1, 1, 16, 16, 16))]
        [torch.Size([1, 8, 16, 16, 16]), torch.Size([1, 16, 8, 8, 8])]
    """

    def __init__(
        self,
        in_channels: int = 1,
        widths: Sequence[int] = (32, 64, 128, 256, 320),
        blocks: Sequence[int] = (1, 2, 2, 2, 2),
        strides: Sequence[Sequence[int] | int] = ((1, 1, 1), (1, 2, 2), (2, 2, 2), (2, 2, 2), (2, 2, 2)),
    ) -> None:
        super().__init__()
        if not (len(widths) == len(blocks) == len(strides)):
            raise ValueError(
                f"widths, blocks and strides need one entry per stage, got {len(widths)}, "
                f"{len(blocks)}, {len(strides)}"
            )
        if any(b < 1 for b in blocks):
            raise ValueError(f"every stage needs at least one block, got blocks={list(blocks)}")
        self.in_channels = int(in_channels)
        self.widths = [int(w) for w in widths]
        self.blocks = [int(b) for b in blocks]
        self.strides = [zyx_triple(s) for s in strides]
        self.stem = ConvNormAct(self.in_channels, self.widths[0])
        stages = []
        previous = self.widths[0]
        for width, count, stride in zip(self.widths, self.blocks, self.strides, strict=True):
            layers = [ResidualBlock(previous, width, stride)]
            layers += [ResidualBlock(width, width) for _ in range(count - 1)]
            stages.append(nn.Sequential(*layers))
            previous = width
        self.stages = nn.ModuleList(stages)

    @property
    def cumulative_strides(self) -> list[tuple[int, int, int]]:
        """Downsampling factor (z, y, x) of each stage's output relative to the input."""
        out, total = [], (1, 1, 1)
        for stride in self.strides:
            total = tuple(t * s for t, s in zip(total, stride, strict=True))
            out.append(total)
        return out

    @property
    def total_stride(self) -> tuple[int, int, int]:
        return self.cumulative_strides[-1]

    @property
    def arch(self) -> dict:
        """The constructor arguments, as stored in a model card's ``arch``."""
        return {
            "in_channels": self.in_channels,
            "widths": list(self.widths),
            "blocks": list(self.blocks),
            "strides": [list(s) for s in self.strides],
        }

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.stem(x)
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features
