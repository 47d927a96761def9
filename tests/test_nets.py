"""The networks are nnU-Net's (dynamic-network-architectures): shapes, strides, keys, card round trip, torch.hub."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet
from dynamic_network_architectures.building_blocks.residual_encoders import ResidualEncoder

import pgl_zoo
from pgl_zoo.arch import ARCH_KWARGS, DECODER_ONLY_KWARGS
from pgl_zoo.nets import (
    adapt_input_channels,
    build_encoder,
    build_unet,
    network_kwargs,
    resenc_arch,
    unique_state_dict,
    validate_arch,
)
from pgl_zoo.nets.keys import drop_aliases, is_alias, part_of

REPO = Path(__file__).resolve().parents[1]
TINY = pgl_zoo.get_card("pgl-ct-tiny").arch


def test_the_librarys_own_classes_take_our_weights_and_compute_the_same():
    """nnU-Net's ResidualEncoderUNet and ResidualEncoder, built from the card's kwargs, load our state dicts
    strictly (same names and shapes) and give the same outputs on a size that needs no padding."""
    torch.manual_seed(0)
    kwargs = network_kwargs(TINY)
    ours, theirs = build_unet(TINY, 2).eval(), ResidualEncoderUNet(1, num_classes=2, **kwargs).eval()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    encoder = build_encoder(TINY).eval()
    library_encoder = ResidualEncoder(1, **{k: v for k, v in kwargs.items() if k not in DECODER_ONLY_KWARGS},
                                      return_skips=True).eval()
    library_encoder.load_state_dict(encoder.state_dict(), strict=True)
    x = torch.randn(1, 1, *(2 * s for s in encoder.total_stride))  # a multiple of the stride: no padding
    with torch.no_grad():
        assert torch.equal(ours(x), theirs(x))
        assert all(torch.equal(a, b) for a, b in zip(encoder(x), library_encoder(x), strict=True))


def test_arch_kwargs_list_matches_the_installed_library():
    params = set(inspect.signature(ResidualEncoderUNet.__init__).parameters)
    assert set(ARCH_KWARGS) == params - {"self", "input_channels", "num_classes", "deep_supervision"}


def test_encoder_features_highest_resolution_first_with_their_strides():
    arch = resenc_arch([4, 8, 12], [1, 2, 1], [[1, 1, 1], [1, 2, 2], [2, 2, 2]])
    enc = build_encoder(arch, in_channels=2)
    feats = enc(torch.randn(2, 2, 8, 16, 24))
    assert [tuple(f.shape) for f in feats] == [(2, 4, 8, 16, 24), (2, 8, 8, 8, 12), (2, 12, 4, 4, 6)]
    assert enc.cumulative_strides == [(1, 1, 1), (1, 2, 2), (2, 4, 4)]
    assert enc.widths == [4, 8, 12]


def test_paper_scale_widths():
    enc = pgl_zoo.load_pgl_encoder("pgl-ct-large", pretrained=False)
    assert enc.widths == [32, 64, 128, 256, 320]
    assert enc.card.name == "pgl-ct-large" and enc.load_report is None


def test_torch_hub_local_unet_shapes():
    net = torch.hub.load(str(REPO), "pgl_unet3d", source="local", pretrained=False, num_classes=3,
                         encoder="pgl-ct-tiny")
    net.eval()
    with torch.no_grad():
        assert net(torch.randn(1, 1, 64, 64, 64)).shape == (1, 3, 64, 64, 64)
        # sizes that are not multiples of the total stride are padded inside and cropped back
        assert net(torch.randn(1, 1, 40, 56, 72)).shape == (1, 3, 40, 56, 72)
        assert net(torch.randn(1, 1, 13, 21, 30)).shape == (1, 3, 13, 21, 30)
    enc = torch.hub.load(str(REPO), "pgl_encoder", "pgl-ct-tiny", source="local", pretrained=False)
    assert enc.card.name == "pgl-ct-tiny" and enc.load_report is None  # the name and pretrained=False arrived


def test_hub_defaults_load_the_bundled_default_encoder_offline(monkeypatch):
    """torch.hub.load(repo, "pgl_unet3d") with no arguments: pgl-ct's weights (bundled, no network),
    100 % of encoder and decoder loaded, a new 2-class head."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    net = torch.hub.load(str(REPO), "pgl_unet3d", source="local")
    assert net.card.name == "pgl-ct" and net.load_report.encoder_fraction == 1.0
    assert all(part_of(k) == "head" for k in net.load_report.not_from_weights)
    with torch.no_grad():
        assert net.eval()(torch.randn(1, 1, 32, 64, 64)).shape == (1, 2, 32, 64, 64)


def test_paper_scale_unet_architecture():
    net = torch.hub.load(str(REPO), "pgl_unet3d", source="local", pretrained=False, num_classes=3,
                         encoder="pgl-ct-large")
    assert [int(c) for c in net.encoder.output_channels] == [32, 64, 128, 256, 320]


def test_odd_sizes_are_zero_padded_at_the_far_end_and_cropped_back():
    net = build_unet(TINY, 2).eval()
    x = torch.randn(1, 1, 13, 21, 30)
    with torch.no_grad():
        odd = net(x)
        # total stride 8: the network pads to 16 x 24 x 32 with zeros after the data
        by_hand = net(torch.nn.functional.pad(x, (0, 2, 0, 3, 0, 3)))[..., :13, :21, :30]
        assert torch.equal(odd, by_hand)
        enc = build_encoder(TINY).eval()
        assert [f.shape[2:] for f in enc(x)] == [(16, 24, 32), (8, 12, 16), (4, 6, 8), (2, 3, 4)]


def test_encoder_keys_match_and_features_agree():
    net = build_unet(TINY, 3).eval()
    enc = build_encoder(TINY).eval()
    assert list(unique_state_dict(enc, "encoder.")) == [k for k in unique_state_dict(net) if k.startswith("encoder.")]
    enc.load_state_dict(net.encoder.state_dict())
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        for a, b in zip(enc(x), net.forward_features(x)[0], strict=True):
            assert torch.equal(a, b)


def test_decoder_levels_are_the_librarys_decoder_outputs():
    net = build_unet(TINY, 3).eval()
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        _, levels = net.forward_features(x)
        assert [lv.shape[1] for lv in levels] == [16, 32, 64]
        # the finest level through the library's last segmentation layer is the network's output
        assert torch.equal(net.decoder.seg_layers[-1](levels[0]), net(x))


def test_zoo_names_are_the_unique_tensors_and_parts_are_right():
    net = build_unet(TINY, 2)
    unique = unique_state_dict(net)
    assert list(drop_aliases(net.state_dict())) == list(unique)
    assert all(is_alias(k) for k in set(net.state_dict()) - set(unique))
    assert {part_of(k) for k in unique} == {"encoder", "decoder", "head"}
    assert {k for k in unique if part_of(k) == "head"} == {
        f"decoder.seg_layers.{i}.{p}" for i in range(3) for p in ("weight", "bias")}
    assert sum(p.numel() for p in net.encoder_parameters()) + sum(p.numel() for p in net.decoder_parameters()) \
        + sum(p.numel() for p in net.head_parameters()) == sum(p.numel() for p in net.parameters())


def test_arch_validation_names_the_fault():
    with pytest.raises(ValueError, match="n_blocks_per_stage"):
        validate_arch({**TINY, "arch_kwargs": {**TINY["arch_kwargs"], "n_blocks_per_stage": [1, 1]}})
    with pytest.raises(ValueError, match="unknown keys"):
        validate_arch({**TINY, "widths": [8]})
    with pytest.raises(ValueError, match="network_class_name"):
        validate_arch({**TINY, "network_class_name": "PlainConvUNet"})
    with pytest.raises(ValueError, match="odd"):
        resenc_arch([8, 16], [1, 1], [1, 2], kernel_sizes=[2, 3])


def test_adapt_input_channels_preserves_response_to_a_repeated_image():
    conv = torch.nn.Conv3d(1, 4, 3, padding=1, bias=False)
    x = torch.randn(1, 1, 6, 6, 6)
    for channels in (2, 3, 4):
        wide = torch.nn.Conv3d(channels, 4, 3, padding=1, bias=False)
        wide.weight.data = adapt_input_channels(conv.weight.data, channels)
        assert torch.allclose(wide(x.repeat(1, channels, 1, 1, 1)), conv(x), atol=1e-5)
    three = torch.randn(4, 3, 3, 3, 3)
    back = adapt_input_channels(three, 1)
    x3 = torch.randn(1, 1, 5, 5, 5)
    assert torch.allclose(
        torch.nn.functional.conv3d(x3, back), torch.nn.functional.conv3d(x3.repeat(1, 3, 1, 1, 1), three), atol=1e-5
    )


def test_freeze_encoder():
    net = pgl_zoo.pgl_unet3d(2, encoder="pgl-ct-tiny", pretrained=False, freeze_encoder=True)
    assert not any(p.requires_grad for p in net.encoder_parameters())
    assert all(p.requires_grad for p in net.decoder_parameters())
    assert all(p.requires_grad for p in net.head_parameters())


@pytest.mark.parametrize("name", pgl_zoo.list_models())
def test_every_registered_card_builds_the_network_it_describes(name):
    card = pgl_zoo.get_card(name)
    net = build_unet(card.arch, 2, card.in_channels).eval()
    kwargs = card.arch["arch_kwargs"]
    assert [int(c) for c in net.encoder.output_channels] == kwargs["features_per_stage"]
    assert [len(stage.blocks) for stage in net.encoder.stages] == kwargs["n_blocks_per_stage"]
    assert [len(stage.convs) for stage in net.decoder.stages] == kwargs["n_conv_per_stage_decoder"][::-1]
    x = torch.zeros(1, card.in_channels, *card.patch_size_zyx)
    with torch.no_grad():
        skips, levels = net.forward_features(x)
    strides = build_encoder(card.arch).cumulative_strides
    for skip, stride in zip(skips, strides, strict=True):
        assert tuple(skip.shape[2:]) == tuple(p // s for p, s in zip(card.patch_size_zyx, stride, strict=True))
    assert len(levels) == kwargs["n_stages"] - 1
