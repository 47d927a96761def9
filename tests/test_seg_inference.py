"""Sliding-window inference agrees with MONAI's Gaussian-blended sliding_window_inference; array API."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _seg_helpers import MICRO_ARCH, micro_card

from pgl_zoo.inference import segment_array
from pgl_zoo.nets import build_unet
from pgl_zoo.sliding_window import gaussian_importance_map, sliding_window_predict, window_starts

monai = pytest.importorskip("monai")


@pytest.fixture(scope="module")
def network() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_unet(MICRO_ARCH, num_classes=3).eval()


@pytest.mark.parametrize(
    ("shape", "roi", "overlap", "batch"),
    [
        ((40, 50, 37), (16, 32, 32), 0.5, 4),   # several windows per axis, last aligned to the end
        ((10, 70, 20), (16, 32, 32), 0.25, 3),  # smaller than the window along z and x: padded
        ((16, 32, 32), (16, 32, 32), 0.5, 1),   # exactly one window
        ((33, 45, 61), (16, 24, 20), 0.6, 5),   # odd sizes, batch not dividing the window count
    ],
)
def test_sliding_window_matches_monai(network, shape, roi, overlap, batch):
    from monai.inferers import sliding_window_inference

    volume = torch.randn(2, 1, *shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = sliding_window_inference(volume, roi, batch, network, overlap=overlap, mode="gaussian",
                                            sigma_scale=0.125)
    ours = sliding_window_predict(network, volume, roi, overlap=overlap, sw_batch_size=batch)
    assert ours.shape == expected.shape
    assert torch.allclose(ours, torch.as_tensor(expected), atol=1e-4, rtol=0)


@pytest.mark.parametrize("roi", [(16, 32, 32), (7, 9, 12)])
def test_importance_map_matches_monai(roi):
    from monai.data.utils import compute_importance_map

    expected = compute_importance_map(roi, mode="gaussian", sigma_scale=0.125)
    assert torch.allclose(gaussian_importance_map(roi), expected, atol=1e-7)


@pytest.mark.parametrize(("size", "roi", "overlap"), [(100, 32, 0.5), (33, 32, 0.25), (32, 32, 0.5), (97, 10, 0.9)])
def test_windows_cover_the_axis_and_end_at_its_end(size, roi, overlap):
    starts = window_starts(size, roi, overlap)
    assert starts[0] == 0 and starts[-1] + roi == size
    assert all(b - a <= roi for a, b in zip(starts, starts[1:], strict=False))  # no gap


def test_segment_array_keeps_the_input_shape(network):
    card = micro_card(spacing=(2.0, 2.0, 2.0), patch=(16, 16, 16))
    array = np.random.default_rng(0).normal(size=(20, 30, 25)).astype(np.float32)
    label = segment_array(array, network, card, spacing_xyz_mm=(1.0, 1.5, 2.5))
    assert label.shape == array.shape and label.dtype == np.uint8
