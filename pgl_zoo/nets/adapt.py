"""Adapting pretrained weights to a different number of input channels."""

from __future__ import annotations

import math

import torch


def adapt_input_channels(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Adapt a first-convolution kernel (out, in, kz, ky, kx) to ``in_channels`` inputs.

    Going to one channel sums over the pretrained input channels (the response to a
    single-channel image equals the response to that image copied to every channel). Going to
    more channels tiles the pretrained kernels and rescales by ``old / new`` so that an input with
    the same image in every channel gives the same activation as before (the timm convention).
    """
    old = weight.shape[1]
    if in_channels == old:
        return weight.clone()
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = math.ceil(in_channels / old)
    tiled = weight.repeat(1, repeats, 1, 1, 1)[:, :in_channels]
    return tiled * (old / in_channels)
