"""Parameter names: which part of the network a key belongs to, and the names a zoo file stores.

dynamic-network-architectures registers some modules twice (``...conv`` and ``...all_modules.0``
are one convolution; the decoder keeps a reference to the encoder, ``decoder.encoder.*``), so a
``state_dict()`` names most tensors two or three times. A zoo file stores each tensor once, under
its first name (the order of ``named_parameters``): ``encoder.*``, ``decoder.transpconvs.*``,
``decoder.stages.*`` and, for a segmentation model, ``decoder.seg_layers.*``.
"""

from __future__ import annotations

import torch
from torch import nn

PARTS = ("encoder", "decoder", "head")
HEAD_PREFIX = "decoder.seg_layers."


def part_of(key: str) -> str:
    """The network part a zoo key belongs to: encoder, decoder or head (the segmentation layers)."""
    if key.startswith(HEAD_PREFIX):
        return "head"
    return key.split(".", 1)[0]


def unique_state_dict(module: nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every parameter and buffer of ``module`` once, under its first name (detached, not copied)."""
    out = {prefix + k: v.detach() for k, v in module.named_parameters()}
    out.update({prefix + k: v.detach() for k, v in module.named_buffers()})
    return out


def is_alias(key: str) -> bool:
    """Whether a ``state_dict`` key is a second name of a tensor that has a zoo name (see module doc)."""
    return key.startswith("decoder.encoder.") or ".all_modules." in key


def drop_aliases(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A ``state_dict`` of a pgl-zoo / nnU-Net network with each tensor once, under its zoo name."""
    return {k: v for k, v in state.items() if not is_alias(k)}
