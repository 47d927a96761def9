"""Shapes, strides and weight sharing of the networks, and torch.hub entry points."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import pgl_zoo
from pgl_zoo.nets import ResidualEncoder3d, UNet3d, adapt_input_channels, build_encoder

REPO = Path(__file__).resolve().parents[1]
TINY = pgl_zoo.get_card("pgl-ct-tiny").arch


def test_encoder_features_highest_resolution_first_with_their_strides():
    enc = ResidualEncoder3d(2, [4, 8, 12], [1, 2, 1], [[1, 1, 1], [1, 2, 2], [2, 2, 2]])
    feats = enc(torch.randn(2, 2, 8, 16, 24))
    assert [tuple(f.shape) for f in feats] == [(2, 4, 8, 16, 24), (2, 8, 8, 8, 12), (2, 12, 4, 4, 6)]
    assert enc.cumulative_strides == [(1, 1, 1), (1, 2, 2), (2, 4, 4)]
    assert ResidualEncoder3d(**enc.arch).arch == enc.arch


def test_paper_scale_widths():
    enc = pgl_zoo.load_pgl_encoder("pgl-ct", pretrained=False)
    assert enc.widths == [32, 64, 128, 256, 320]
    assert enc.card.name == "pgl-ct" and enc.load_report is None


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
    assert isinstance(enc, ResidualEncoder3d)


def test_paper_scale_unet_via_hub_default_encoder():
    net = torch.hub.load(str(REPO), "pgl_unet3d", source="local", pretrained=False, num_classes=3)
    with torch.no_grad():
        assert net.eval()(torch.randn(1, 1, 64, 64, 64)).shape == (1, 3, 64, 64, 64)


def test_odd_sizes_are_zero_padded_at_the_far_end_and_cropped_back():
    net = UNet3d(2, **TINY).eval()
    x = torch.randn(1, 1, 13, 21, 30)
    with torch.no_grad():
        odd = net(x)
        # total stride 8: the network pads to 16 x 24 x 32 with zeros after the data
        by_hand = net(torch.nn.functional.pad(x, (0, 2, 0, 3, 0, 3)))[..., :13, :21, :30]
    assert torch.equal(odd, by_hand)


def test_encoder_keys_match_and_features_agree():
    net = UNet3d(3, **TINY).eval()
    enc = build_encoder(TINY).eval()
    assert list(enc.state_dict()) == list(net.encoder.state_dict())
    enc.load_state_dict(net.encoder.state_dict())
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        for a, b in zip(enc(x), net.forward_features(x)[0], strict=True):
            assert torch.equal(a, b)


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
    assert not any(p.requires_grad for p in net.encoder.parameters())
    assert all(p.requires_grad for p in net.decoder.parameters())


def test_mismatched_stage_lists_are_refused():
    with pytest.raises(ValueError, match="one entry per stage"):
        ResidualEncoder3d(1, [8, 16], [1], [[1, 1, 1], [2, 2, 2]])
