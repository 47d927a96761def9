"""Losses and the online/target frame: the local loss is zero for identical aligned features and
positive otherwise; gradients reach the online network only; the EMA and momentum schedule."""

from __future__ import annotations

import numpy as np
import torch

from pgl_zoo.nets import resenc_arch
from pgl_zoo.pretrain.align import shuffle_positions
from pgl_zoo.pretrain.diagnostics import collapse_indicators
from pgl_zoo.pretrain.losses import cosine_momentum, global_loss, local_loss
from pgl_zoo.pretrain.model import OnlineNetwork, make_target, pgl_losses, update_target
from pgl_zoo.pretrain.views import sample_view_pair

ARCH = resenc_arch([8, 16, 32], [1, 1, 1], [[1, 1, 1], [2, 2, 2], [2, 2, 2]])


def test_local_loss_zero_for_identical_and_positive_otherwise():
    p = torch.randn(2, 8, 3, 4, 5)
    assert local_loss(p, p.clone(), p.clone(), p.clone()).abs() < 1e-6
    assert local_loss(2 * p, p, p, 3 * p).abs() < 1e-6  # scale-invariant (cosine)
    other = torch.randn(2, 8, 3, 4, 5)
    assert local_loss(p, p, other, other) > 0.1
    # a single differing voxel is enough to make it positive
    q = p.clone()
    q[0, :, 1, 2, 3] = -q[0, :, 1, 2, 3]
    assert local_loss(p, p, q, q) > 0
    # invalid samples are left out
    valid = torch.tensor([False, True])
    assert local_loss(p, p, q, q, valid).abs() < 1e-6


def test_global_loss_range():
    z = torch.randn(4, 16)
    assert global_loss(z, z, z, z).abs() < 1e-6
    assert torch.isclose(global_loss(z, z, -z, -z), torch.tensor(4.0), atol=1e-5)


def _batch(n=2, patch=(8, 16, 16)):
    vol = np.random.default_rng(0).standard_normal((16, 32, 32)).astype(np.float32)
    pairs = [sample_view_pair(vol, patch, np.random.default_rng(i)) for i in range(n)]
    a = torch.stack([p[0].image for p in pairs])[:, None]
    b = torch.stack([p[1].image for p in pairs])[:, None]
    return a, b, torch.stack([p[0].to_source for p in pairs]), torch.stack([p[1].to_source for p in pairs])


def test_gradients_flow_to_online_network_only():
    torch.manual_seed(0)
    online = OnlineNetwork(ARCH, [0, 1])
    target = make_target(online)
    losses = pgl_losses(online, target, *_batch(), local_weight=1.0)
    assert losses.local is not None and losses.local > 0
    losses.total.backward()
    assert all(not p.requires_grad and p.grad is None for p in target.parameters())
    for name, p in online.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert any(p.grad.abs().sum() > 0 for n, p in online.named_parameters() if n.startswith("branch.decoder"))


def test_byol_baseline_skips_the_local_branch():
    torch.manual_seed(0)
    online = OnlineNetwork(ARCH, [1])
    target = make_target(online)
    losses = pgl_losses(online, target, *_batch(), local_weight=0.0)
    assert losses.local is None and torch.equal(losses.total, losses.global_)
    losses.total.backward()
    assert all(p.grad is None for n, p in online.named_parameters() if n.startswith("branch.decoder"))


def test_ema_update_and_cosine_momentum():
    online = OnlineNetwork(ARCH, [1])
    target = make_target(online)
    with torch.no_grad():
        for p in online.parameters():
            p.add_(1.0)
    before = [p.clone() for p in target.parameters()]
    update_target(online.branch, target, 0.9)
    for b, t, o in zip(before, target.parameters(), online.branch.parameters(), strict=True):
        assert torch.allclose(t, 0.9 * b + 0.1 * o, atol=1e-6)
    assert abs(cosine_momentum(0, 100) - 0.996) < 1e-9 and abs(cosine_momentum(100, 100) - 1.0) < 1e-9
    assert cosine_momentum(0, 100) < cosine_momentum(50, 100) < cosine_momentum(100, 100)


def test_shuffle_positions_changes_the_correspondence_and_nothing_else():
    torch.manual_seed(0)
    maps = torch.randn(3, 5, 4, 6, 7)
    shuffled = shuffle_positions(maps, torch.Generator().manual_seed(1))
    assert shuffled.shape == maps.shape
    for i in range(3):
        before = maps[i].reshape(5, -1).T  # voxels x channels
        after = shuffled[i].reshape(5, -1).T
        # the same voxel vectors (channels kept together), as a multiset ...
        assert torch.equal(torch.sort(before[:, 0]).values, torch.sort(after[:, 0]).values)
        order_b, order_a = torch.argsort(before[:, 0]), torch.argsort(after[:, 0])
        assert torch.equal(before[order_b], after[order_a])
        # ... at other positions
        assert (before != after).any(dim=1).float().mean() > 0.9


def test_shuffled_control_breaks_correspondence_in_the_loss():
    """Perfectly matching aligned maps give a local loss of 0; the same maps with shuffled target
    positions give a large one. In pgl_losses the control changes the local term only."""
    torch.manual_seed(0)
    p = torch.randn(2, 8, 3, 4, 5)
    assert local_loss(p, p, p, p).abs() < 1e-6
    assert local_loss(p, p, shuffle_positions(p), shuffle_positions(p)) > 1.0
    online = OnlineNetwork(ARCH, [1])
    target = make_target(online)
    batch = _batch(n=2)
    aligned = pgl_losses(online, target, *batch, local_weight=1.0)
    control = pgl_losses(online, target, *batch, local_weight=1.0, local_control="shuffled")
    assert torch.isclose(aligned.global_, control.global_)
    assert not torch.isclose(aligned.local, control.local)


def test_collapse_indicators_are_zero_for_constant_features_and_flag_collapse():
    const_g, const_l = torch.full((6, 16), 0.7), torch.full((2, 8, 3, 4, 5), -1.3)
    ind = collapse_indicators(const_g, {1: const_l})
    assert ind["std_global"] == 0 and ind["std_local_voxels"] == 0 and ind["std_local_channels"] == 0
    assert ind["collapsed_global"] and ind["collapsed_local"]
    torch.manual_seed(0)
    ind = collapse_indicators(torch.randn(64, 16), {1: torch.randn(2, 8, 3, 4, 5)})
    assert 0.5 / 4 < ind["std_global"] < 1.5 / 4  # about 1/sqrt(D) for random unit vectors
    assert ind["std_local_voxels"] > 0.2 and ind["std_local_channels"] > 0.2
    assert not ind["collapsed_global"] and not ind["collapsed_local"]


def test_losses_carry_the_indicators():
    torch.manual_seed(0)
    online = OnlineNetwork(ARCH, [1])
    losses = pgl_losses(online, make_target(online), *_batch(), local_weight=1.0)
    assert {"std_global", "std_local_voxels", "std_local_channels", "collapsed_local"} <= set(losses.indicators)
    byol = pgl_losses(online, make_target(online), *_batch(), local_weight=0.0)
    assert "std_local_voxels" not in byol.indicators and "std_global" in byol.indicators
