"""Networks: the residual encoder, the U-Net decoder and the segmentation network."""

from __future__ import annotations

from typing import Any

from .adapt import adapt_input_channels
from .encoder import STEM_KEY, ResidualEncoder3d
from .unet import UNet3d, UNetDecoder

__all__ = [
    "STEM_KEY",
    "ResidualEncoder3d",
    "UNet3d",
    "UNetDecoder",
    "adapt_input_channels",
    "build_encoder",
    "build_unet",
]


def build_encoder(arch: dict[str, Any], in_channels: int | None = None) -> ResidualEncoder3d:
    """The encoder a card's ``arch`` describes (optionally with another number of input channels)."""
    kwargs = dict(arch)
    if in_channels is not None:
        kwargs["in_channels"] = in_channels
    return ResidualEncoder3d(**kwargs)


def build_unet(arch: dict[str, Any], num_classes: int, in_channels: int | None = None) -> UNet3d:
    """The segmentation network on a card's ``arch``."""
    kwargs = dict(arch)
    if in_channels is not None:
        kwargs["in_channels"] = in_channels
    return UNet3d(num_classes=num_classes, **kwargs)
