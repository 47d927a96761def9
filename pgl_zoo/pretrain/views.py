"""Two spatially augmented views of one volume, each with its spatial prior recorded as an affine.

Axis order is (z, y, x) everywhere; coordinates are voxel indices (voxel centres at integers).

A view is defined by a crop box in the source volume (integer offset ``o`` and size ``c`` per
source axis), a resize of that crop to the patch size ``P``, and an orientation ``R`` (a signed
permutation: flips along any axis and quarter turns in the axial (y, x) plane). Its affine
``to_source`` maps a view voxel index ``v`` to a source voxel index ``u``::

    u = diag(s) @ (R @ (v - (P - 1) / 2) + (Q - 1) / 2) + o,   Q = |R| P,   s = (c - 1) / (Q - 1)

i.e. the resize is trilinear with ``align_corners=True`` (crop corner voxels land exactly on patch
corner voxels). The view image is sampled from the source volume *through this very affine*
(one trilinear ``grid_sample``), so image and prior cannot disagree. Crops that extend beyond the
volume (volumes smaller than a crop) read a constant padding value (the volume's minimum).

Defaults (project choices, set by the transfer study v2, see README; their one home is
:mod:`.view_defaults`): crop scale U(0.75, 1.5) x patch drawn per view (so the two views see the same
anatomy at resolutions up to 2x apart), overlap fraction U(0.3, 0.8) realised exactly, flips p = 0.5
per axis. The values quoted (second-hand) for the paper were crop scale 1.1-1.4 and overlap >= 10 %;
on volumes barely larger than the crops those make two nearly identical views (the first study's
local loss fell to 0.22 with little to learn).
Quarter turns (``rotate=True``) are a project option, off by default.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .view_defaults import FLIP_P, OVERLAP_RANGE, SCALE_RANGE


@dataclass
class View:
    """One view: ``image`` (z, y, x) float32 tensor of the patch size; ``to_source`` (4, 4) float64
    affine from view voxel index (z, y, x) to source voxel index (z, y, x)."""

    image: Tensor
    to_source: Tensor


def orientation_matrix(flips: tuple[bool, bool, bool] = (False, False, False), quarter_turns: int = 0) -> np.ndarray:
    """Signed permutation R (3x3) mapping centred view coordinates to centred crop coordinates.

    ``quarter_turns`` (0..3) rotates by k * 90 degrees in the axial (y, x) plane; ``flips`` then
    reverses view axes (z, y, x) where True (index i -> n - 1 - i).
    """
    rot = np.eye(3)
    turn = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    for _ in range(int(quarter_turns) % 4):
        rot = rot @ turn
    flip = np.diag([-1.0 if f else 1.0 for f in flips])
    return rot @ flip


def view_affine(
    offset_zyx: np.ndarray, crop_zyx: np.ndarray, patch_size: tuple[int, int, int], orientation: np.ndarray
) -> np.ndarray:
    """The 4x4 affine (float64) of a view: view voxel index -> source voxel index (see module doc)."""
    p = np.asarray(patch_size, dtype=np.float64)
    q = np.abs(orientation) @ p  # patch size in crop-axis order
    c = np.asarray(crop_zyx, dtype=np.float64)
    s = np.where(q > 1, (c - 1) / np.maximum(q - 1, 1), 1.0)
    linear = np.diag(s) @ orientation
    translation = np.asarray(offset_zyx, dtype=np.float64) + s * (q - 1) / 2 - linear @ ((p - 1) / 2)
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = translation
    return affine


def sample_through_affines(
    volume: np.ndarray | Tensor, affines: list[np.ndarray], patch_size: tuple[int, int, int], pad_value: float
) -> list[Tensor]:
    """Images (z, y, x) of ``patch_size``: ``image[v] = trilinear(volume, A @ v)`` for each affine.

    Only the bounding box of all crops is read from ``volume`` (which may be a memory map);
    points outside the volume read ``pad_value``.
    """
    shape = np.asarray(volume.shape)
    corners = np.array(np.meshgrid(*[[0, n - 1] for n in patch_size], indexing="ij")).reshape(3, -1)
    pts = np.concatenate([(a[:3, :3] @ corners + a[:3, 3:4]) for a in affines], axis=1)
    lo = np.floor(pts.min(axis=1)).astype(int)
    hi = np.ceil(pts.max(axis=1)).astype(int) + 1  # exclusive
    src_lo, src_hi = np.maximum(lo, 0), np.minimum(hi, shape)
    region = volume[tuple(slice(a, b) for a, b in zip(src_lo, src_hi, strict=True))]
    if torch.is_tensor(region):
        region = region.to(torch.float32)
    else:  # a copy: the source may be a read-only memory map
        region = torch.from_numpy(np.array(region, dtype=np.float32))
    pad_lo, pad_hi = src_lo - lo, hi - src_hi
    if (pad_lo > 0).any() or (pad_hi > 0).any():
        pads = [int(v) for pair in zip(pad_lo[::-1], pad_hi[::-1], strict=True) for v in pair]
        region = F.pad(region, pads, value=float(pad_value))
    size = np.asarray(region.shape, dtype=np.float64)
    grid_idx = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in patch_size], indexing="ij"))
    grid_idx = grid_idx.reshape(3, -1)
    grids = []
    for a in affines:
        u = a[:3, :3] @ grid_idx + a[:3, 3:4] - lo[:, None]
        norm = np.where(size[:, None] > 1, 2 * u / np.maximum(size[:, None] - 1, 1) - 1, 0.0)
        grids.append(norm[::-1].T.reshape(*patch_size, 3))  # grid_sample wants (x, y, z)
    grid = torch.from_numpy(np.stack(grids).astype(np.float32))
    out = F.grid_sample(region[None, None].expand(len(affines), 1, *region.shape), grid, mode="bilinear",
                        padding_mode="border", align_corners=True)
    return [out[i, 0] for i in range(len(affines))]


def box_overlap_fraction(o_a, c_a, o_b, c_b) -> float:
    """Intersection volume of two axis-aligned boxes (offset ``o``, size ``c``, source voxels)
    divided by the smaller box's volume: 1 when one lies inside the other, 0 when disjoint."""
    o_a, c_a, o_b, c_b = (np.asarray(v, dtype=np.float64) for v in (o_a, c_a, o_b, c_b))
    inter = np.clip(np.minimum(o_a + c_a, o_b + c_b) - np.maximum(o_a, o_b), 0, None)
    return float(np.prod(inter) / min(np.prod(c_a), np.prod(c_b)))


def crop_box(to_source: np.ndarray | Tensor, patch_size: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(offset, size) in source voxels of the crop a view shows, read back from its affine: the
    bounding box of the images of the patch's corner voxels (size ``c - 1`` between corner centres,
    returned as ``c``)."""
    a = np.asarray(to_source, dtype=np.float64)
    corners = np.array(np.meshgrid(*[[0, n - 1] for n in patch_size], indexing="ij")).reshape(3, -1)
    pts = a[:3, :3] @ corners + a[:3, 3:4]
    lo, hi = pts.min(axis=1), pts.max(axis=1)
    return lo, hi - lo + 1


def pair_geometry(to_a, to_b, patch_size: tuple[int, int, int]) -> tuple[float, float]:
    """The realised (overlap fraction, scale ratio) of a view pair from its affines: overlap as in
    :func:`box_overlap_fraction`; scale ratio = larger crop edge / smaller crop edge (>= 1; the
    factor between the two views' resolutions of the same anatomy)."""
    o_a, c_a = crop_box(to_a, patch_size)
    o_b, c_b = crop_box(to_b, patch_size)
    ratio = float(np.cbrt(np.prod(c_a) / np.prod(c_b)))
    return box_overlap_fraction(o_a, c_a, o_b, c_b), max(ratio, 1.0 / ratio)


def _place_second(rng: np.random.Generator, c_a: np.ndarray, c_b: np.ndarray, target: float) -> np.ndarray:
    """Offset of crop B relative to crop A (origin at A's corner) so that their overlap fraction is
    ``target``: B starts centred on A and moves along a random direction; the overlap is
    non-increasing along the way, so bisection finds the distance (to 1e-4 of the fraction). When
    even the centred placement overlaps less than ``target`` (crops of different shapes), B stays centred."""
    centred = (c_a - c_b) / 2
    direction = rng.normal(size=3)
    direction /= max(np.linalg.norm(direction), 1e-12)
    if box_overlap_fraction(np.zeros(3), c_a, centred, c_b) <= target:
        return centred
    lo, hi = 0.0, float(np.linalg.norm(c_a + c_b))  # at hi the boxes are disjoint
    for _ in range(60):
        mid = (lo + hi) / 2
        if box_overlap_fraction(np.zeros(3), c_a, centred + mid * direction, c_b) > target:
            lo = mid
        else:
            hi = mid
    return centred + hi * direction


def _place_pair(rng: np.random.Generator, dim: np.ndarray, lo_box: np.ndarray, size: np.ndarray) -> np.ndarray:
    """Offset of the pair's union box (relative corner ``lo_box``, extent ``size``) in the volume:
    uniform so that it lies inside the volume, or (union larger than the volume along an axis)
    so that the volume lies inside it; continuous (trilinear sampling reads any position)."""
    low, high = np.minimum(0, dim - size), np.maximum(0, dim - size)
    return rng.uniform(low, high) - lo_box


def sample_view_pair(
    volume: np.ndarray | Tensor,
    patch_size: tuple[int, int, int],
    rng: np.random.Generator,
    *,
    scale_range: tuple[float, float] = SCALE_RANGE,
    overlap_range: tuple[float, float] = OVERLAP_RANGE,
    flip_p: float = FLIP_P,
    rotate: bool = False,
    pad_value: float | None = None,
) -> tuple[View, View]:
    """Two views of ``volume`` (z, y, x) with their affines to source voxel indices.

    Each crop is ``scale * patch`` voxels (scale ~ U(scale_range), drawn per view, isotropic), so
    the same anatomy appears at different resolutions in the two views. Their overlap fraction
    (intersection / smaller crop, :func:`box_overlap_fraction`) is drawn from U(overlap_range) and
    realised exactly (bisection along a random direction, :func:`_place_second`); the pair is then
    placed uniformly in the volume (crops may leave a volume smaller than the pair: those voxels
    read ``pad_value``, default the volume's minimum). Each view is flipped along each axis with
    probability ``flip_p`` and, with ``rotate``, turned by a random multiple of 90 degrees in the
    axial plane. Offsets are continuous. Deterministic given ``rng``. No intensity augmentation
    here (see augment.py). :func:`pair_geometry` reads the realised overlap and scale back.
    """
    patch = tuple(int(p) for p in patch_size)
    dim = np.asarray(volume.shape[-3:], dtype=np.float64)
    if pad_value is None:
        pad_value = float(volume.min())
    orientations, crops = [], []
    for _ in range(2):
        k = int(rng.integers(0, 4)) if rotate else 0
        flips = tuple(bool(f) for f in rng.random(3) < flip_p)
        r = orientation_matrix(flips, k)
        q = np.abs(r) @ np.asarray(patch, dtype=np.float64)
        orientations.append(r)
        crops.append(np.maximum(rng.uniform(*scale_range) * q, 1.0))
    target = rng.uniform(*overlap_range)
    rel_b = _place_second(rng, crops[0], crops[1], target)
    lo_box = np.minimum(0.0, rel_b)
    size = np.maximum(crops[0], rel_b + crops[1]) - lo_box
    o_a = _place_pair(rng, dim, lo_box, size)
    o_b = o_a + rel_b
    affines = [view_affine(o, c, patch, r) for o, c, r in zip((o_a, o_b), crops, orientations, strict=True)]
    images = sample_through_affines(volume, affines, patch, pad_value)
    return tuple(View(img, torch.from_numpy(a)) for img, a in zip(images, affines, strict=True))  # type: ignore[return-value]
