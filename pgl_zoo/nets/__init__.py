"""Networks: nnU-Net's residual encoder and ResidualEncoderUNet, built from a card's ``arch``.

The classes come from dynamic-network-architectures (the library nnU-Net v2 and nnssl build their
networks with); pgl-zoo adds only what its API promises on top: multi-scale features, any input
size, parameter groups and input-channel adaptation. See :mod:`pgl_zoo.arch` for the card
format and :mod:`pgl_zoo.nets.keys` for the parameter names.
"""

from __future__ import annotations

from typing import Any

import torch

from ..arch import (
    DECODER_ONLY_KWARGS,
    REQUIRES_IMPORT,
    cumulative_strides,
    op_class,
    resenc_arch,
    stage_strides,
    stage_widths,
    validate_arch,
    zyx_triple,
)
from .adapt import adapt_input_channels
from .encoder import STEM_KEY, ResidualEncoder3d
from .keys import PARTS, part_of, unique_state_dict
from .probe import LinearProbe3d, build_probe
from .unet import UNet3d, decode_levels

__all__ = [
    "PARTS",
    "STEM_KEY",
    "LinearProbe3d",
    "ResidualEncoder3d",
    "UNet3d",
    "adapt_input_channels",
    "build_encoder",
    "build_probe",
    "build_unet",
    "cumulative_strides",
    "decode_levels",
    "part_of",
    "resenc_arch",
    "stage_strides",
    "stage_widths",
    "unique_state_dict",
    "validate_arch",
    "zyx_triple",
]


def network_kwargs(arch: dict[str, Any]) -> dict[str, Any]:
    """``arch_kwargs`` with the class names turned into classes, as nnU-Net's ``get_network_from_plans`` does,
    but from the fixed allow-list of :data:`pgl_zoo.arch.ALLOWED_OPS` only: a card never makes
    pgl-zoo import or call anything by a name it holds (nnU-Net's ``pydoc.locate`` would)."""
    arch = validate_arch(arch)
    kwargs = dict(arch["arch_kwargs"])
    for key in REQUIRES_IMPORT:
        name = op_class(key, kwargs.get(key))
        if name is not None:
            kwargs[key] = getattr(torch.nn, name)
    return kwargs


def _initialize(module) -> None:
    """nnU-Net's initialisation of ResidualEncoderUNet (He normal, zero last norm of each residual block)."""
    from dynamic_network_architectures.initialization.weight_init import InitWeights_He, init_last_bn_before_add_to_0

    module.apply(InitWeights_He(1e-2))
    module.apply(init_last_bn_before_add_to_0)


def build_encoder(arch: dict[str, Any], in_channels: int | None = None) -> ResidualEncoder3d:
    """The encoder a card's ``arch`` describes, with ``in_channels`` inputs (default 1), nnU-Net-initialised."""
    kwargs = {k: v for k, v in network_kwargs(arch).items() if k not in DECODER_ONLY_KWARGS}
    encoder = ResidualEncoder3d(int(in_channels or 1), **kwargs)
    _initialize(encoder)
    return encoder


def build_unet(arch: dict[str, Any], num_classes: int, in_channels: int | None = None) -> UNet3d:
    """The segmentation network on a card's ``arch`` (``in_channels`` default 1), nnU-Net-initialised."""
    net = UNet3d(int(in_channels or 1), num_classes, **network_kwargs(arch))
    _initialize(net)
    return net
