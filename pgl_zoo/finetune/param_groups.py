"""Which parameters of a segmentation network are encoder, decoder and head: the one place that knows
the network's module layout (it changes when the networks move to dynamic-network-architectures; then
only these functions change, or call the network's own ``encoder_parameters()`` etc.)."""

from __future__ import annotations

from typing import Any

from torch import nn


def encoder_parameters(net: nn.Module) -> list[nn.Parameter]:
    if hasattr(net, "encoder_parameters"):
        return list(net.encoder_parameters())
    return list(net.encoder.parameters())


def decoder_parameters(net: nn.Module) -> list[nn.Parameter]:
    """The decoder's own parameters (not the encoder's, not the head's)."""
    if hasattr(net, "decoder_parameters"):
        return list(net.decoder_parameters())
    return list(net.decoder.parameters())


def head_parameters(net: nn.Module) -> list[nn.Parameter]:
    if hasattr(net, "head_parameters"):
        return list(net.head_parameters())
    return list(net.head.parameters())


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
    groups.append({"params": [*decoder_parameters(net), *head_parameters(net)], "lr": lr, "name": "decoder+head"})
    return groups
