"""The zoo's encoder: nnU-Net's ``ResidualEncoder`` (dynamic-network-architectures), returning every stage."""

from __future__ import annotations

from typing import Any

from dynamic_network_architectures.building_blocks.residual_encoders import ResidualEncoder
from torch import Tensor

from ..arch import cumulative_strides
from .padding import pad_to_multiple

STEM_KEY = "stem.convs.0.conv.weight"  # the only weight whose shape depends on the input channels


class ResidualEncoder3d(ResidualEncoder):
    """nnU-Net's residual encoder with ``return_skips=True``, plus the geometry pgl-zoo needs.

    Input: (N, C, z, y, x). Output: a list with one feature map per stage, highest resolution
    first; map ``i`` has ``widths[i]`` channels and is downsampled by ``cumulative_strides[i]``
    (z, y, x) relative to the input. The library's blocks need sizes that divide the strides, so
    any other size is zero-padded at the far end of each axis to a multiple of ``total_stride``
    (map ``i`` then has the padded size / ``cumulative_strides[i]``; the padding is at the high
    end of each axis, so voxel (0, 0, 0) stays aligned). Parameter names equal those under ``encoder.`` in
    :class:`pgl_zoo.nets.UNet3d` and in nnU-Net's ``ResidualEncoderUNet``.

    Build it with :func:`pgl_zoo.nets.build_encoder` from a card's ``arch``.
    """

    def __init__(self, input_channels: int, **arch_kwargs: Any) -> None:
        super().__init__(input_channels, **arch_kwargs, return_skips=True, disable_default_stem=False)
        self.input_channels = int(input_channels)

    @property
    def widths(self) -> list[int]:
        return [int(w) for w in self.output_channels]

    @property
    def cumulative_strides(self) -> list[tuple[int, int, int]]:
        """Downsampling factor (z, y, x) of each stage's output relative to the input."""
        return cumulative_strides(self.strides)

    @property
    def total_stride(self) -> tuple[int, int, int]:
        return self.cumulative_strides[-1]

    def forward(self, x: Tensor) -> list[Tensor]:
        return super().forward(pad_to_multiple(x, self.total_stride))
