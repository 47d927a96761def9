"""Prior-guided alignment is exact: views of a volume whose voxel values are their own source
coordinates, with every combination of flips, quarter turns and scales, align to identical maps
(at strides 1, 2 and 4), and a prior that is wrong by one flip is detected."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pgl_zoo.pretrain import align_views, sample_view_pair
from pgl_zoo.pretrain.views import View, orientation_matrix, sample_through_affines, view_affine

SHAPE = (28, 44, 40)  # (z, y, x) source volume
PATCH = (8, 16, 16)
COORDS = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in SHAPE], indexing="ij"))  # (3, z, y, x)
TRANSFORMS = list(itertools.product(itertools.product([False, True], repeat=3), range(4)))  # 8 flips x 4 turns


def coordinate_views(offsets, crops, transforms) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Views whose 3 channels are the source (z, y, x) coordinates; their affines."""
    affines = [view_affine(np.array(o), np.array(c), PATCH, orientation_matrix(*t))
               for o, c, t in zip(offsets, crops, transforms, strict=True)]
    channels = [sample_through_affines(COORDS[axis], affines, PATCH, pad_value=0.0) for axis in range(3)]
    images = [torch.stack([channels[axis][v] for axis in range(3)]) for v in range(len(affines))]
    return images, [torch.from_numpy(a) for a in affines]


def pooled(image: torch.Tensor, stride: int) -> torch.Tensor:
    return image[None] if stride == 1 else F.avg_pool3d(image[None], stride)


def interior(mask_shape, stride: int) -> tuple[slice, ...]:
    """Exclude one grid point at each face (about one stride of the box boundary)."""
    return tuple(slice(1, n - 1) if n > 2 else slice(None) for n in mask_shape)


def test_coordinate_views_hold_their_source_coordinates():
    """Sampled views of the coordinate volume: voxel v holds the source coordinate A @ v."""
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in PATCH], indexing="ij")).reshape(3, -1).astype(float)
    for seed in range(20):
        pairs = [sample_view_pair(COORDS[axis], PATCH, np.random.default_rng(seed), rotate=True) for axis in range(3)]
        for v in range(2):
            affine = pairs[0][v].to_source.numpy()
            mapped = affine[:3, :3] @ grid + affine[:3, 3:4]
            inside = ((mapped >= 0) & (mapped <= np.array(SHAPE)[:, None] - 1)).all(0)
            for axis in range(3):
                view = pairs[axis][v]
                assert isinstance(view, View) and tuple(view.image.shape) == PATCH
                assert torch.equal(view.to_source, pairs[0][v].to_source)
                assert np.abs(view.image.numpy().reshape(-1) - mapped[axis])[inside].max() < 1e-4


@pytest.mark.parametrize("stride", [1, 2, 4])
def test_alignment_exact_for_every_flip_rotation_and_scale(stride):
    rng = np.random.default_rng(stride)
    worst, checked = 0.0, 0
    for index, t_a in enumerate(TRANSFORMS):
        for t_b in (TRANSFORMS[(index * 7 + 3) % 32], TRANSFORMS[(index * 13 + 5) % 32]):
            scales = rng.uniform(1.1, 1.4, size=2)
            crops = []
            for t, s in zip((t_a, t_b), scales, strict=True):
                q = np.abs(orientation_matrix(*t)) @ np.array(PATCH, dtype=float)
                crops.append(np.round(s * q).astype(int))
            o_a = np.array([rng.integers(0, n - c + 1) for n, c in zip(SHAPE, crops[0], strict=True)])
            o_b = np.clip(o_a + rng.integers(-3, 4, size=3), 0, np.array(SHAPE) - crops[1])
            (img_a, img_b), (aff_a, aff_b) = coordinate_views([o_a, o_b], crops, [t_a, t_b])
            fa, fb = pooled(img_a, stride), pooled(img_b, stride)
            al_a, al_b, valid = align_views(fa, fb, aff_a[None], aff_b[None], stride, return_valid=True)
            assert valid.all()
            inner = (slice(None), slice(None)) + interior(al_a.shape[2:], stride)
            err = (al_a[inner] - al_b[inner]).abs().max().item()
            worst = max(worst, err)
            checked += 1
            # and both equal the true source coordinates of a grid inside the overlap:
            # the aligned maps vary, i.e. the test is not trivially passed by constants
            assert al_a[0, :, ...].std() > 0.1
    assert checked == 64
    assert worst < 1e-4, f"aligned coordinate maps differ by up to {worst}"


def test_alignment_batched_with_sampled_views():
    """A batch of sampled pairs (random scales, flips, quarter turns) aligns exactly, sample by sample."""
    feats_a, feats_b, aff_a, aff_b = [], [], [], []
    for seed in range(8):
        pairs = [sample_view_pair(COORDS[axis], PATCH, np.random.default_rng(seed), rotate=True,
                                  overlap_range=(0.3, 0.8))
                 for axis in range(3)]
        assert all(torch.equal(p[0].to_source, pairs[0][0].to_source) for p in pairs)
        feats_a.append(torch.stack([p[0].image for p in pairs]))
        feats_b.append(torch.stack([p[1].image for p in pairs]))
        aff_a.append(pairs[0][0].to_source)
        aff_b.append(pairs[0][1].to_source)
    fa, fb = F.avg_pool3d(torch.stack(feats_a), 2), F.avg_pool3d(torch.stack(feats_b), 2)
    al_a, al_b, valid = align_views(fa, fb, torch.stack(aff_a), torch.stack(aff_b), 2, return_valid=True)
    assert al_a.shape == al_b.shape == (8, 3, 4, 8, 8)
    err = (al_a - al_b).abs().amax(dim=(1, 2, 3, 4))[valid]
    assert valid.sum() >= 6 and err.max() < 1e-4


def test_wrong_prior_is_detected():
    """Forgetting to undo one flip (the affine of an unflipped view paired with a flipped image)."""
    rng = np.random.default_rng(1)
    crops = [np.round(1.2 * np.array(PATCH)).astype(int)] * 2
    o = np.array([rng.integers(0, n - c + 1) for n, c in zip(SHAPE, crops[0], strict=True)])
    for axis in range(3):
        flips = tuple(i == axis for i in range(3))
        (img_a, img_b), (aff_a, aff_b) = coordinate_views([o, o + 1], crops, [((False,) * 3, 0), (flips, 0)])
        good = align_views(img_a[None], img_b[None], aff_a[None], aff_b[None], 1)
        assert (good[0] - good[1]).abs().max() < 1e-4
        wrong_affine = torch.from_numpy(view_affine(o + 1, crops[1], PATCH, orientation_matrix()))
        bad = align_views(img_a[None], img_b[None], aff_a[None], wrong_affine[None], 1)
        assert (bad[0] - bad[1]).abs().max() > 1.0, f"a flip along axis {'zyx'[axis]} went unnoticed"


def test_alignment_is_differentiable_and_shapes():
    fa = torch.randn(2, 5, 4, 8, 8, requires_grad=True)
    fb = torch.randn(2, 5, 4, 8, 8, requires_grad=True)
    eye = torch.eye(4, dtype=torch.float64).expand(2, 4, 4)
    a, b = align_views(fa, fb, eye, eye, (2, 2, 2))
    assert a.shape == (2, 5, 4, 8, 8)
    (a.sum() + b.sum()).backward()
    assert fa.grad is not None and fb.grad is not None
    # identical views at identity: alignment reproduces the map itself
    assert torch.allclose(a, fa, atol=1e-5)
