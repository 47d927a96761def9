"""Convolution blocks shared by the encoder and the decoder (all on (N, C, z, y, x) tensors)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


def zyx_triple(value: int | Sequence[int]) -> tuple[int, int, int]:
    """A per-axis (z, y, x) triple from one int or three values (strides, sizes)."""
    if isinstance(value, int):
        return (value, value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 3:
        raise ValueError(f"expected 3 values (z, y, x), got {value}")
    return value  # type: ignore[return-value]


def norm3d(channels: int) -> nn.Module:
    """InstanceNorm with learnable affine parameters (the nnU-Net convention)."""
    return nn.InstanceNorm3d(channels, affine=True, eps=1e-5)


def act() -> nn.Module:
    return nn.LeakyReLU(0.01, inplace=True)


class ConvNormAct(nn.Module):
    """3x3x3 convolution (optionally strided), InstanceNorm, LeakyReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int | Sequence[int] = 1) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, 3, stride=zyx_triple(stride), padding=1, bias=False)
        self.norm = norm3d(out_channels)
        self.act = act()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.norm(self.conv(x)))


class ResidualBlock(nn.Module):
    """Two 3x3x3 convolutions with a residual connection (a 1x1x1 projection when shape changes).

    A stride other than 1 on the first convolution downsamples by that factor per axis (z, y, x).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int | Sequence[int] = 1) -> None:
        super().__init__()
        stride = zyx_triple(stride)
        self.conv1 = nn.Conv3d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.norm1 = norm3d(out_channels)
        self.conv2 = nn.Conv3d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = norm3d(out_channels)
        self.act = act()
        if in_channels != out_channels or stride != (1, 1, 1):
            self.skip = nn.Sequential(
                nn.Conv3d(in_channels, out_channels, 1, stride=stride, bias=False), norm3d(out_channels)
            )
        else:
            self.skip = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        y = self.act(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        return self.act(y + self.skip(x))
