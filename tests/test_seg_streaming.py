"""predict_label streams along z and still gives exactly the argmax of the whole-volume blend; the
compiled path (torch.compile, frozen weights, fixed window batch) gives the same labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _seg_helpers import MICRO_ARCH

from pgl_zoo.compile import compile_for_inference
from pgl_zoo.nets import build_unet
from pgl_zoo.sliding_window import default_window_batch, predict_label, sliding_window_predict


@pytest.fixture(scope="module")
def network() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_unet(MICRO_ARCH, num_classes=3).eval()


def whole_volume_labels(network, array, roi, overlap, batch) -> np.ndarray:
    volume = torch.from_numpy(array)[None, None]
    scores = sliding_window_predict(network, volume, roi, overlap=overlap, sw_batch_size=batch, normalize=False)
    return scores[0].argmax(0).numpy()


@pytest.mark.parametrize(
    ("shape", "roi", "overlap", "batch"),
    [
        ((70, 40, 37), (16, 32, 32), 0.5, 2),    # many z steps, the last window shifted back to the end
        ((64, 32, 32), (16, 32, 32), 0.0, 3),    # no overlap: each z step finishes a whole window
        ((45, 50, 33), (16, 24, 20), 0.75, 5),   # deep overlap: each step finishes a few planes
        ((10, 70, 20), (16, 32, 32), 0.25, 4),   # smaller than the window along z and x: padded, cropped
        ((16, 32, 32), (16, 32, 32), 0.5, 1),    # one window
    ],
)
def test_streamed_labels_equal_the_argmax_of_the_whole_blend(network, shape, roi, overlap, batch):
    array = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    expected = whole_volume_labels(network, array, roi, overlap, batch)
    label = predict_label(network, array, roi, overlap=overlap, sw_batch_size=batch)
    assert label.shape == shape and label.dtype == np.uint8
    assert len(np.unique(expected)) >= 2  # the comparison is not between two constant maps
    np.testing.assert_array_equal(label, expected)


def test_window_batch_does_not_change_the_labels(network):
    array = np.random.default_rng(2).normal(size=(50, 40, 40)).astype(np.float32)
    labels = [predict_label(network, array, (16, 32, 32), sw_batch_size=b) for b in (1, 2, 7, None)]
    for other in labels[1:]:
        np.testing.assert_array_equal(other, labels[0])


def test_default_window_batch_by_device():
    assert default_window_batch("cpu") == 2 and default_window_batch(torch.device("cpu")) == 2
    assert default_window_batch("cuda") == 4


def test_compiled_network_gives_the_same_labels(network):
    """torch.compile with freezing: float rounding only; the last partial batch is padded (one shape)."""
    array = np.random.default_rng(3).normal(size=(40, 36, 34)).astype(np.float32)
    eager = predict_label(network, array, (16, 32, 32), sw_batch_size=3)
    compiled = compile_for_inference(network)
    assert compiled.pgl_fixed_batch
    labels = predict_label(compiled, array, (16, 32, 32), sw_batch_size=3)  # 18 windows: last batch padded
    assert (labels == eager).mean() >= 0.999
    volume = torch.from_numpy(array)[None, None]
    with torch.inference_mode():
        probabilities = [sliding_window_predict(n, volume, (16, 32, 32), sw_batch_size=3, fixed_batch=n is compiled)
                         .softmax(1) for n in (network, compiled)]
    assert float((probabilities[0] - probabilities[1]).abs().max()) < 1e-3


def test_deferred_intensities_give_the_labels_of_the_normalised_volume(network):
    """An int16 scan mapped window by window equals the float32 volume normalised first."""
    from pgl_zoo.preprocessing.intensity import intensity_map, normalize_intensities

    hu = np.random.default_rng(4).normal(-300, 500, size=(48, 40, 44)).astype(np.int16)
    for normalization in ("zscore", "minmax"):
        mapping = intensity_map(hu, (-1024, 325), normalization)
        normalised = normalize_intensities(hu, (-1024, 325), normalization)
        expected = predict_label(network, normalised, (16, 32, 32), sw_batch_size=2)
        label = predict_label(network, hu, (16, 32, 32), sw_batch_size=2, intensity=mapping)
        np.testing.assert_array_equal(label, expected)
        small = predict_label(network, hu[:10], (16, 32, 32), intensity=mapping)  # padded: mapped first
        np.testing.assert_array_equal(small, predict_label(network, normalised[:10], (16, 32, 32)))


def test_a_failed_compilation_falls_back_to_the_eager_network():
    """No working C++ compiler (inductor's real check, on a compiler name that does not exist): one
    warning naming the problem, then the eager network's labels."""
    from torch._inductor import config as inductor_config

    torch.manual_seed(1)
    network = build_unet(MICRO_ARCH, num_classes=3).eval()  # its own: nothing compiled for it yet
    array = np.random.default_rng(5).normal(size=(20, 32, 32)).astype(np.float32)
    compiled = compile_for_inference(network)
    with inductor_config.patch({"cpp.cxx": ("no-such-compiler-for-pgl-zoo",)}):
        with pytest.warns(RuntimeWarning, match="torch.compile failed.*compiler"):
            labels = predict_label(compiled, array, (16, 32, 32), sw_batch_size=2)
    assert compiled.compile_error is not None
    np.testing.assert_array_equal(labels, predict_label(network, array, (16, 32, 32), sw_batch_size=2))
