"""Online and target networks of PGL and the loss of one batch of view pairs.

The backbone is nnU-Net's ResidualEncoderUNet built from the card (dynamic-network-architectures):
its encoder and its decoder's upsampling and merge stages (state-dict keys ``encoder.*`` and
``decoder.transpconvs.*`` / ``decoder.stages.*``, as in :class:`pgl_zoo.nets.UNet3d`; the
segmentation layers are not part of pretraining). Global branch: global average pool of the
bottleneck -> MLP projector (-> MLP predictor, online only). Local branch: decoder maps at the
chosen levels (level i has stride ``encoder.cumulative_strides[i]``, i = 0 is full resolution) ->
1x1x1-conv projector (-> predictor, online only). The decoder runs only down to the finest chosen
level, and not at all when the local weight is 0 (BYOL baseline). Head widths are project
defaults: global hidden 4 x bottleneck width, output 128; local hidden 2 x level width, output
max(32, level width).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..nets import build_unet, cumulative_strides, decode_levels
from .align import align_views, shuffle_positions
from .diagnostics import collapse_indicators
from .heads import ConvHead, MLPHead, global_pool
from .losses import global_loss, local_loss, total_loss


class Decoder(nn.Module):
    """The library decoder's upsampling (``transpconvs``) and merge (``stages``) modules, without its
    segmentation layers and without its reference to the encoder (so each tensor has one name)."""

    def __init__(self, transpconvs: nn.ModuleList, stages: nn.ModuleList) -> None:
        super().__init__()
        self.transpconvs = transpconvs
        self.stages = stages


class Branch(nn.Module):
    """Backbone + projectors: ``forward(x, with_local)`` -> (global projection (N, D),
    {level: local projection map (N, C, z, y, x)})."""

    def __init__(self, arch: dict, local_levels: Sequence[int], global_dim: int = 128) -> None:
        super().__init__()
        unet = build_unet(arch, num_classes=1)
        self.encoder = unet.encoder
        widths = [int(w) for w in self.encoder.output_channels]
        self.decoder = Decoder(unet.decoder.transpconvs, unet.decoder.stages)
        self.local_levels = sorted({int(i) for i in local_levels})
        for level in self.local_levels:
            if not 0 <= level < len(widths) - 1:
                raise ValueError(f"local level {level} out of range: decoder levels are 0..{len(widths) - 2}")
        self.global_projector = MLPHead(widths[-1], 4 * widths[-1], global_dim)
        self.local_projectors = nn.ModuleDict(
            {str(i): ConvHead(widths[i], 2 * widths[i], local_dim(widths[i])) for i in self.local_levels}
        )

    @property
    def widths(self) -> list[int]:
        return [int(w) for w in self.encoder.output_channels]

    @property
    def feature_strides(self) -> list[tuple[int, int, int]]:
        """Stride (z, y, x) of encoder map / decoder level i relative to the input."""
        return cumulative_strides(self.encoder.strides)

    def forward(self, x: Tensor, with_local: bool = True) -> tuple[Tensor, dict[int, Tensor]]:
        features = self.encoder(x)
        g = self.global_projector(global_pool(features[-1]))
        local: dict[int, Tensor] = {}
        if with_local and self.local_levels:
            decoded = decode_levels(self.decoder.transpconvs, self.decoder.stages, features, self.local_levels[0])
            local = {i: self.local_projectors[str(i)](decoded[i]) for i in self.local_levels}
        return g, local


def local_dim(width: int) -> int:
    return max(32, int(width))


class OnlineNetwork(nn.Module):
    """The online network: a :class:`Branch` plus the global and local predictors."""

    def __init__(self, arch: dict, local_levels: Sequence[int], global_dim: int = 128) -> None:
        super().__init__()
        self.branch = Branch(arch, local_levels, global_dim)
        widths = self.branch.widths
        self.global_predictor = MLPHead(global_dim, 4 * widths[-1], global_dim)
        self.local_predictors = nn.ModuleDict(
            {str(i): ConvHead(local_dim(widths[i]), 2 * widths[i], local_dim(widths[i]))
             for i in self.branch.local_levels}
        )

    def forward(self, x: Tensor, with_local: bool = True) -> tuple[Tensor, dict[int, Tensor]]:
        g, local = self.branch(x, with_local)
        return self.global_predictor(g), {i: self.local_predictors[str(i)](m) for i, m in local.items()}


def make_target(online: OnlineNetwork) -> Branch:
    """A frozen copy of the online branch (no gradients; updated only by :func:`update_target`)."""
    target = copy.deepcopy(online.branch)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


@torch.no_grad()
def update_target(online_branch: nn.Module, target: nn.Module, momentum: float) -> None:
    """EMA: ``target = momentum * target + (1 - momentum) * online``; buffers are copied."""
    t_params = list(target.parameters())
    o_params = [p.detach() for p in online_branch.parameters()]
    torch._foreach_mul_(t_params, momentum)
    torch._foreach_add_(t_params, o_params, alpha=1 - momentum)
    for tb, ob in zip(target.buffers(), online_branch.buffers(), strict=True):
        tb.copy_(ob)


@dataclass
class Losses:
    """The batch's losses and the target's projections (detached), from which :attr:`indicators` are read."""

    total: Tensor
    global_: Tensor
    local: Tensor | None
    target_global: Tensor | None = None  # (2N, D)
    target_local: dict[int, Tensor] | None = None  # {level: (2N, C, z, y, x)}; empty without the local branch

    @property
    def indicators(self) -> dict[str, float | bool] | None:
        """The collapse indicators of the target's projections (diagnostics.py). Computed when read, with one
        copy to the host (a GPU sync): the trainer reads them on logged steps only."""
        if self.target_global is None:
            return None
        return collapse_indicators(self.target_global, self.target_local or {})


def pgl_losses(
    online: nn.Module,
    target: Branch,
    view_a: Tensor,
    view_b: Tensor,
    to_source_a: Tensor,
    to_source_b: Tensor,
    local_weight: float,
    local_control: str = "none",
) -> Losses:
    """Losses of a batch of view pairs (N, 1, z, y, x) with their (N, 4, 4) affines.

    ``online`` may be the :class:`OnlineNetwork` or its DDP wrapper. Both views go through each
    network as one batch of 2N. ``local_control="shuffled"`` is the control run: after alignment
    the target maps' voxel positions are permuted at random (:func:`shuffle_positions`), so the
    local loss asks each voxel to predict an unrelated voxel of the other view.
    """
    n = view_a.shape[0]
    with_local = local_weight != 0
    x = torch.cat([view_a, view_b])
    p_global, p_local = online(x, with_local)
    with torch.no_grad():
        z_global, z_local = target(x, with_local)
    l_global = global_loss(p_global[:n], p_global[n:], z_global[:n], z_global[n:])
    l_local = None
    if with_local:
        strides = target.feature_strides
        terms = []
        for level, p_map in p_local.items():
            z_map = z_local[level]
            c = p_map.shape[1]
            # float32: under bf16 autocast the sampling coordinates would otherwise lose precision
            fa = torch.cat([p_map[:n], z_map[:n]], dim=1).float()
            fb = torch.cat([p_map[n:], z_map[n:]], dim=1).float()
            aa, ab, valid = align_views(fa, fb, to_source_a, to_source_b, strides[level], return_valid=True)
            za, zb = aa[:, c:], ab[:, c:]
            if local_control == "shuffled":
                za, zb = shuffle_positions(za), shuffle_positions(zb)
            terms.append(local_loss(aa[:, :c], ab[:, :c], za, zb, valid))
        l_local = torch.stack(terms).mean()
    return Losses(total_loss(l_global, l_local, local_weight), l_global, l_local, z_global, z_local)
