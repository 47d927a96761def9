"""Prior-guided alignment: resample two views' feature maps onto one grid over their overlap.

Axis order (z, y, x); coordinates are voxel indices. A feature map at stride ``s`` (per view axis)
comes from average-pooling-like downsampling: feature voxel ``j`` covers view voxels
``[j*s, (j+1)*s)``, so its centre is at view coordinate ``j*s + (s-1)/2`` and a view coordinate
``v`` sits at feature coordinate ``f = (v - (s-1)/2) / s``.

For each sample the overlap box ``B`` is the intersection, in source voxel coordinates, of the two
views' *feature-centre hulls* (the source images of feature coordinates ``[0, n-1]``), so every
grid point is an interpolation (never an extrapolation) in both maps. A regular grid of ``G``
points per source axis spans ``B``; each view's map is sampled there with trilinear
``grid_sample(align_corners=True)``: flips, rotations, crops and scales are undone in one batched
call. Aligned voxel (i, j, k) of both outputs shows the same source location.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..arch import zyx_triple


def _hull_box(to_source: Tensor, size: Tensor, stride: Tensor) -> tuple[Tensor, Tensor]:
    """Source-coordinate box (N, 3) lo/hi of each sample's feature-centre hull."""
    half = (stride - 1) / 2
    lo_v, hi_v = half, (size - 1) * stride + half  # view coordinates of first / last feature centre
    corners = torch.stack(torch.meshgrid(*[torch.stack([lo_v[i], hi_v[i]]) for i in range(3)], indexing="ij"))
    corners = corners.reshape(3, 8)
    pts = to_source[:, :3, :3] @ corners + to_source[:, :3, 3:4]  # (N, 3, 8)
    return pts.amin(dim=2), pts.amax(dim=2)


def overlap_grid(
    to_source_a: Tensor, to_source_b: Tensor, size_a: Sequence[int], size_b: Sequence[int],
    stride: int | Sequence[int], grid_size: Sequence[int],
) -> tuple[Tensor, Tensor]:
    """Source coordinates (N, Gz, Gy, Gx, 3) of a regular grid over each sample's overlap box, and
    (N,) bool: whether that box is non-empty.

    An empty overlap (the feature-centre hulls do not intersect at this stride) collapses to a
    point; such samples carry no aligned signal and are flagged invalid.
    """
    dtype = torch.float64
    st = torch.tensor(zyx_triple(stride), dtype=dtype)
    ta, tb = to_source_a.to(dtype), to_source_b.to(dtype)
    lo_a, hi_a = _hull_box(ta, torch.tensor(list(size_a), dtype=dtype), st)
    lo_b, hi_b = _hull_box(tb, torch.tensor(list(size_b), dtype=dtype), st)
    lo, hi = torch.maximum(lo_a, lo_b), torch.minimum(hi_a, hi_b)
    valid = (hi >= lo - 1e-6).all(dim=1)
    hi = torch.maximum(hi, lo)
    ts = [torch.linspace(0, 1, int(g), dtype=dtype) for g in grid_size]
    t = torch.stack(torch.meshgrid(*ts, indexing="ij"), dim=-1)  # (Gz, Gy, Gx, 3)
    return lo[:, None, None, None, :] + (hi - lo)[:, None, None, None, :] * t[None], valid


def sample_at_source(feats: Tensor, to_source: Tensor, points: Tensor, stride: int | Sequence[int]) -> Tensor:
    """Sample ``feats`` (N, C, z, y, x) at source points (N, Gz, Gy, Gx, 3) -> (N, C, Gz, Gy, Gx)."""
    dtype = torch.float64
    n, g = points.shape[0], points.shape[1:4]
    st = torch.tensor(zyx_triple(stride), dtype=dtype, device=points.device)
    size = torch.tensor(list(feats.shape[2:]), dtype=dtype, device=points.device)
    inv = torch.linalg.inv(to_source.to(dtype))  # (N, 4, 4): source -> view
    u = points.reshape(n, -1, 3).transpose(1, 2)  # (N, 3, P)
    v = inv[:, :3, :3] @ u + inv[:, :3, 3:4]
    f = (v - ((st - 1) / 2)[None, :, None]) / st[None, :, None]
    denom = (size - 1).clamp(min=1)[None, :, None]
    norm = torch.where(size[None, :, None] > 1, 2 * f / denom - 1, torch.zeros_like(f))
    grid = norm.flip(1).transpose(1, 2).reshape(n, *g, 3).to(feats.dtype)  # (x, y, z) last
    return F.grid_sample(feats, grid, mode="bilinear", padding_mode="border", align_corners=True)


def align_views(
    feats_a: Tensor,
    feats_b: Tensor,
    to_source_a: Tensor,
    to_source_b: Tensor,
    stride: int | Sequence[int],
    grid_size: Sequence[int] | None = None,
    return_valid: bool = False,
):
    """Align two batches of feature maps (N, C, z, y, x) of the two views at the given ``stride``.

    ``to_source_a/b``: (N, 4, 4) affines from view voxel index (z, y, x) to source voxel index.
    ``grid_size`` (Gz, Gy, Gx) points per source axis; default: the spatial size of ``feats_a``.
    Returns (N, C, Gz, Gy, Gx) maps whose voxel (i, j, k) is the same source point in both.
    Differentiable with respect to the features (not the affines). With ``return_valid`` a third
    output (N,) bool says which samples have a non-empty overlap at this stride (the others'
    maps are clamped samples of unrelated points and should be left out of a loss).
    """
    if feats_a.dim() != 5 or feats_b.dim() != 5:
        raise ValueError(f"features must be (N, C, z, y, x), got {tuple(feats_a.shape)} and {tuple(feats_b.shape)}")
    grid_size = tuple(feats_a.shape[2:]) if grid_size is None else tuple(int(g) for g in grid_size)
    ta = to_source_a.to(device="cpu", dtype=torch.float64)
    tb = to_source_b.to(device="cpu", dtype=torch.float64)
    points, valid = overlap_grid(ta, tb, feats_a.shape[2:], feats_b.shape[2:], stride, grid_size)
    out_a = sample_at_source(feats_a, ta.to(feats_a.device), points.to(feats_a.device), stride)
    out_b = sample_at_source(feats_b, tb.to(feats_b.device), points.to(feats_b.device), stride)
    if return_valid:
        return out_a, out_b, valid.to(feats_a.device)
    return out_a, out_b


def shuffle_positions(maps: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """The control of the local loss: ``maps`` (N, C, z, y, x) with its voxel positions permuted at
    random, independently per sample, channels kept together. Same values, same number of voxels:
    only the correspondence between positions is destroyed."""
    n, c = maps.shape[:2]
    flat = maps.reshape(n, c, -1)
    perms = torch.stack([torch.randperm(flat.shape[2], generator=generator) for _ in range(n)]).to(maps.device)
    shuffled = torch.gather(flat, 2, perms[:, None, :].expand(n, c, -1))
    return shuffled.reshape(maps.shape)
