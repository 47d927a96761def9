"""The public functions: build networks from zoo entries, with or without their weights."""

from __future__ import annotations

import os

import torch

from .cards import LINEAR_PROBE, ModelCard
from .errors import PglZooError
from .load_report import LoadReport, load_parts
from .nets import ResidualEncoder3d, UNet3d, build_encoder, build_probe, build_unet
from .registry import default_encoder
from .resolve import ModelRef, model_card, resolve_model
from .weights import read_state_dict, resolve_weights

PathLike = str | os.PathLike


def _resolve(model: str | ModelCard | ModelRef, weights, **hub):
    resolved = resolve_weights(model, weights, **hub)
    state, digest = read_state_dict(resolved.path, resolved.card, verified_sha256=resolved.verified_sha256)
    report = LoadReport(
        source=resolved.source, path=str(resolved.path), sha256=digest, sha256_verified=bool(resolved.card.sha256)
    )
    return resolved.card, state, report


def load_pgl_encoder(
    name: str | PathLike | None = None,
    *,
    weights: PathLike | None = None,
    pretrained: bool = True,
    map_location: str | torch.device = "cpu",
    strict: bool = True,
    in_channels: int | None = None,
    revision: str | None = None,
    cache_dir: PathLike | None = None,
) -> ResidualEncoder3d:
    """A zoo encoder, with its pretrained weights unless ``pretrained=False``.

    ``name`` is a registered model (``pgl_zoo.list_models()``) or a folder saved by pgl-zoo;
    None means :func:`pgl_zoo.registry.default_encoder` (now "pgl-ct").
    ``weights`` overrides where the weights come from (a file or folder). The sha256 recorded in
    the card is verified before loading. Loading is strict: a missing, unexpected or mis-shaped
    key raises LoadError. The returned module has ``.card`` and ``.load_report`` attributes
    (``load_report`` is None when ``pretrained=False``, which touches no file or network).

    Input (N, in_channels, z, y, x) preprocessed as ``encoder.card.preprocessing`` says; output:
    a list of feature maps, highest resolution first.
    """
    name = default_encoder() if name is None else name
    if not pretrained:
        card = model_card(name)
        encoder = build_encoder(card.arch, in_channels or card.in_channels)
        encoder.card, encoder.load_report = card, None
        return encoder.to(map_location)
    card, state, report = _resolve(name, weights, revision=revision, cache_dir=cache_dir)
    encoder = build_encoder(card.arch, in_channels or card.in_channels)
    load_parts(encoder, state, ("encoder",), key_prefix="encoder.", strict=strict, report=report)
    encoder.card, encoder.load_report = card, report
    return encoder.to(map_location)


def pgl_unet3d(
    num_classes: int = 2,
    *,
    encoder: str | PathLike | None = None,
    weights: PathLike | None = None,
    pretrained: bool = True,
    in_channels: int = 1,
    freeze_encoder: bool = False,
    load_decoder: bool = True,
    strict: bool = True,
    map_location: str | torch.device = "cpu",
    revision: str | None = None,
    cache_dir: PathLike | None = None,
) -> UNet3d:
    """A segmentation network (encoder + decoder + head) on a zoo encoder.

    ``encoder`` is a zoo name or a folder saved by pgl-zoo; None means
    :func:`pgl_zoo.registry.default_encoder` (now "pgl-ct").
    With ``pretrained=True`` the encoder is loaded from the zoo entry (first convolution adapted
    when ``in_channels`` differs), and the decoder too when the file has one and
    ``load_decoder``; the head is always new. ``.load_report`` lists what came from the weights
    (``not_from_weights`` names the freshly initialised decoder/head keys). ``freeze_encoder``
    turns off gradients of the encoder's parameters.

    Input (N, in_channels, z, y, x); output logits (N, num_classes, z, y, x), any size.
    """
    encoder = default_encoder() if encoder is None else encoder
    if not pretrained:
        card = model_card(encoder)
        net = build_unet(card.arch, num_classes, in_channels)
        net.card, net.load_report = card, None
    else:
        card, state, report = _resolve(encoder, weights, revision=revision, cache_dir=cache_dir)
        net = build_unet(card.arch, num_classes, in_channels)
        parts = ("encoder", "decoder") if load_decoder and "decoder" in card.contents else ("encoder",)
        load_parts(net, state, parts, strict=strict, report=report)
        net.card, net.load_report = card, report
    if freeze_encoder:
        net.freeze_encoder(True)
    return net.to(map_location)


def load_segmentation_model(
    name: str | PathLike,
    *,
    weights: PathLike | None = None,
    map_location: str | torch.device = "cpu",
    revision: str | None = None,
    cache_dir: PathLike | None = None,
) -> tuple[UNet3d, ModelCard]:
    """A trained segmentation network (encoder, decoder and head), loaded strictly, and its card.

    ``name``: a zoo name, an exported model folder, or a fine-tuning run folder (its ``model/``).
    The one place a segmentation model is loaded (``pgl-zoo segment`` and fine-tuning use it).
    """
    card, state, report = _resolve(resolve_model(name), weights, revision=revision, cache_dir=cache_dir)
    if card.task != "segmentation" or not card.num_classes or "head" not in card.contents:
        raise PglZooError(
            f"{report.path}: {card.name} is not a segmentation model (task {card.task!r}); "
            "fine-tune it first with `pgl-zoo finetune`"
        )
    if card.architecture == LINEAR_PROBE:
        net = build_probe(card.arch, card.num_classes, card.in_channels)
    else:
        net = build_unet(card.arch, card.num_classes, card.in_channels)
    load_parts(net, state, card.contents, strict=True, report=report)
    net.card, net.load_report = card, report
    return net.to(map_location).eval(), card
