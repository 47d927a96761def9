"""Learning-rate groups of a segmentation network (:class:`pgl_zoo.nets.UNet3d`) for fine-tuning.

Which parameters are encoder, decoder and head is the network's own knowledge
(``encoder_parameters()``, ``decoder_parameters()``, ``head_parameters()``); the encoder's depth
order is that of nnU-Net's ``ResidualEncoder`` (``stem``, then ``stages``)."""

from __future__ import annotations

from typing import Any

from torch import nn


def encoder_layers(net: nn.Module) -> list[list[nn.Parameter]]:
    """The encoder's parameters by depth: the stem first, then stage 0 .. n-1."""
    encoder = net.encoder
    return [list(encoder.stem.parameters()), *[list(stage.parameters()) for stage in encoder.stages]]


def layer_decay_groups(net: nn.Module, lr: float, layer_decay: float) -> list[dict[str, Any]]:
    """AdamW groups with layer-wise lr decay (BEiT style), for n encoder stages:

    stem ``lr * decay**(n+1)``; encoder stage i (0-based) ``lr * decay**(n-i)`` (the deepest stage
    ``lr * decay``); decoder and head ``lr``. ``layer_decay`` 1 gives every group ``lr``.
    """
    layers = encoder_layers(net)
    n = len(layers) - 1
    groups = [{"params": params, "lr": lr * layer_decay ** (n + 1 - depth), "name": "encoder.stem" if depth == 0
               else f"encoder.stage{depth - 1}"} for depth, params in enumerate(layers)]
    groups.append({"params": [*net.decoder_parameters(), *net.head_parameters()], "lr": lr, "name": "decoder+head"})
    return groups
