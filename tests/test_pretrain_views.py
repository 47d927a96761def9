"""Views: the image is the crop resized (trilinear, corners on corners), rotated and flipped exactly
as the recorded affine says; sampling is reproducible, overlapping, and pads small volumes."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pgl_zoo.pretrain import sample_view_pair
from pgl_zoo.pretrain.augment import IntensityAugment, gaussian_blur
from pgl_zoo.pretrain.views import orientation_matrix, pair_geometry, sample_through_affines, view_affine

VOLUME = np.random.default_rng(0).standard_normal((20, 30, 30)).astype(np.float32)


@pytest.mark.parametrize("flips,turns", list(itertools.product(itertools.product([False, True], repeat=3), range(4))))
def test_view_is_resized_rotated_flipped_crop(flips, turns):
    """Independent of the affine: resize with F.interpolate(align_corners=True), torch.rot90, torch.flip."""
    patch, offset, crop = (6, 10, 10), np.array([2, 3, 4]), np.array([8, 13, 13])
    source_crop = torch.from_numpy(VOLUME[2:10, 3:16, 4:17])
    resized = F.interpolate(source_crop[None, None], size=patch, mode="trilinear", align_corners=True)[0, 0]
    expected = torch.rot90(resized, turns, dims=(2, 1))
    axes = [i for i, f in enumerate(flips) if f]
    expected = torch.flip(expected, axes) if axes else expected
    affine = view_affine(offset, crop, patch, orientation_matrix(flips, turns))
    image = sample_through_affines(VOLUME, [affine], patch, pad_value=0.0)[0]
    assert torch.allclose(image, expected, atol=1e-5)
    # the affine maps the view's corner voxels onto the crop's corner voxels
    corners = np.array(list(itertools.product(*[[0, p - 1] for p in patch])), dtype=float).T
    mapped = affine[:3, :3] @ corners + affine[:3, 3:4]
    assert np.allclose(np.sort(mapped, axis=1)[:, [0, -1]], np.stack([offset, offset + crop - 1], 1))


def test_sample_view_pair_contract_and_reproducibility():
    a1, b1 = sample_view_pair(VOLUME, (8, 16, 16), np.random.default_rng(5), rotate=True)
    a2, b2 = sample_view_pair(torch.from_numpy(VOLUME), (8, 16, 16), np.random.default_rng(5), rotate=True)
    for v in (a1, b1):
        assert v.image.shape == (8, 16, 16) and v.image.dtype == torch.float32
        assert v.to_source.shape == (4, 4)
        assert torch.equal(v.to_source[3], torch.tensor([0.0, 0, 0, 1], dtype=v.to_source.dtype))
    assert torch.equal(a1.image, a2.image) and torch.equal(b1.to_source, b2.to_source)


def _box(affine, patch):
    corners = np.array(list(itertools.product(*[[0, p - 1] for p in patch])), dtype=float).T
    pts = affine[:3, :3].numpy() @ corners + affine[:3, 3:4].numpy()
    return pts.min(1), pts.max(1) + 1


@pytest.mark.parametrize("scales,overlaps", [((0.75, 1.5), (0.3, 0.8)), ((1.1, 1.4), (0.1, 0.2)),
                                             ((1.0, 1.0), (0.5, 0.5))])
def test_views_realise_the_requested_scale_and_overlap(scales, overlaps):
    """Every pair's crops have sizes in scale_range x patch and overlap in overlap_range, measured
    independently from the affines (corner boxes); the ranges are actually spanned, not just respected."""
    patch = (8, 16, 16)
    realised, sizes = [], []
    for seed in range(40):
        a, b = sample_view_pair(VOLUME, patch, np.random.default_rng(seed), scale_range=scales, overlap_range=overlaps,
                                rotate=False)
        (lo_a, hi_a), (lo_b, hi_b) = _box(a.to_source, patch), _box(b.to_source, patch)
        for lo, hi in ((lo_a, hi_a), (lo_b, hi_b)):
            ratio = (hi - lo) / np.array(patch)
            assert np.allclose(ratio, ratio[0], atol=1e-6)  # isotropic per view
            assert scales[0] - 1e-6 <= ratio[0] <= scales[1] + 1e-6
            sizes.append(ratio[0])
        inter = np.clip(np.minimum(hi_a, hi_b) - np.maximum(lo_a, lo_b), 0, None).prod()
        fraction = inter / min((hi_a - lo_a).prod(), (hi_b - lo_b).prod())
        assert overlaps[0] - 1e-3 <= fraction <= overlaps[1] + 1e-3
        assert pair_geometry(a.to_source, b.to_source, patch)[0] == pytest.approx(fraction, abs=1e-9)
        realised.append(fraction)
    if overlaps[1] - overlaps[0] > 0.2:
        assert max(realised) - min(realised) > 0.5 * (overlaps[1] - overlaps[0])
    if scales[1] > scales[0]:
        assert max(sizes) - min(sizes) > 0.5 * (scales[1] - scales[0])


def test_pair_geometry_reads_the_scale_ratio():
    patch = (8, 16, 16)
    a = view_affine(np.zeros(3), np.array(patch) * 0.75, patch, np.eye(3))
    b = view_affine(np.array([2.0, 3.0, 1.0]), np.array(patch) * 1.5, patch, orientation_matrix((True, False, True), 1))
    overlap, ratio = pair_geometry(a, b, patch)
    assert ratio == pytest.approx(2.0, rel=1e-6)
    assert 0 < overlap <= 1


def test_small_volume_is_padded():
    thin = np.random.default_rng(1).standard_normal((3, 12, 40)).astype(np.float32)
    a, b = sample_view_pair(thin, (8, 16, 16), np.random.default_rng(0), flip_p=0.0)
    assert a.image.shape == (8, 16, 16)
    assert torch.isclose(a.image.min(), torch.tensor(float(thin.min())))  # padding value: the volume minimum
    assert torch.isfinite(a.image).all() and torch.isfinite(b.image).all()


def test_intensity_augment_is_seeded_and_changes_intensity():
    image = torch.from_numpy(VOLUME[:8, :16, :16].copy())
    aug = IntensityAugment(noise_p=1, blur_p=1, brightness_p=1, contrast_p=1, gamma_p=1)
    out1, out2 = aug(image, np.random.default_rng(3)), aug(image, np.random.default_rng(3))
    assert torch.equal(out1, out2) and not torch.allclose(out1, image)
    blurred = gaussian_blur(image, 1.0)
    assert blurred.shape == image.shape and blurred.std() < image.std()
    assert torch.allclose(gaussian_blur(torch.ones(4, 5, 6), 0.7), torch.ones(4, 5, 6), atol=1e-6)
