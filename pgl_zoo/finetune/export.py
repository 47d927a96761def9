"""Trained segmentation networks as zoo entries: export a run's weights, and load a run or entry back."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..cards import LINEAR_PROBE, NOT_PUBLISHED, ModelCard

__all__ = ["export_segmentation_model", "load_model"]


def export_segmentation_model(
    state_dict: dict[str, torch.Tensor], card: ModelCard, num_classes: int, out_dir: str | os.PathLike
) -> Path:
    """Write a segmentation network (encoder + decoder + head; encoder + head for a linear probe, whose card's
    ``architecture`` says so) like a zoo entry: safetensors + card.

    The card is marked as a segmentation model with ``num_classes`` classes; its preprocessing,
    patch size and label names should be those the network was trained with. Returns the folder,
    which ``load_model`` / ``pgl_zoo.load_segmentation_model`` / ``pgl-zoo segment --model`` accept.
    """
    from ..publish import save_pretrained

    contents = ("encoder", "head") if card.architecture == LINEAR_PROBE else ("encoder", "decoder", "head")
    card = card.replace(
        status=NOT_PUBLISHED, task="segmentation", contents=contents,
        num_classes=int(num_classes), sha256=None, hub_repo_id=None, revision=None,
        evaluation=None,  # new weights: a result measured on others does not describe them
    )
    return save_pretrained(state_dict, card, out_dir)


def load_model(model: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, ModelCard]:
    """A segmentation network and its card from a run folder, an exported folder or a zoo name (Hub):
    :func:`pgl_zoo.load_segmentation_model`, kept for compatibility."""
    from ..api import load_segmentation_model

    return load_segmentation_model(model, map_location=device)
