"""Optimisers and schedules of the trainer: warm-up + cosine, LARS, no decay on norms and biases."""

from __future__ import annotations

import pytest
import torch

from pgl_zoo.errors import PglZooError
from pgl_zoo.pretrain.config import PretrainConfig
from pgl_zoo.pretrain.optim import LARS, make_optimizer, param_groups
from pgl_zoo.training import warmup_cosine


def test_warmup_then_cosine():
    values = [warmup_cosine(s, 100, 10) for s in range(100)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(values[9:], values[10:], strict=False))
    assert warmup_cosine(100, 100, 10) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("name", ["adamw", "lars"])
def test_optimizers_reduce_a_loss(name):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.BatchNorm1d(16), torch.nn.Linear(16, 1))
    x, y = torch.randn(64, 8), torch.randn(64, 1)
    opt = make_optimizer(model, name, lr=0.05 if name == "adamw" else 0.2, weight_decay=1e-4)
    assert isinstance(opt, LARS) == (name == "lars")
    first = None
    for _ in range(30):
        loss = torch.nn.functional.mse_loss(model(x), y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first


def test_norms_and_biases_are_not_decayed():
    model = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3), torch.nn.InstanceNorm3d(4, affine=True))
    decay, no_decay = param_groups(model, 0.1)
    assert [p.ndim for p in decay["params"]] == [5] and no_decay["weight_decay"] == 0.0


def test_config_rejects_bad_values_in_one_line():
    with pytest.raises(PglZooError, match="batch-size"):
        PretrainConfig(batch_size=1)
    with pytest.raises(PglZooError, match="crop-scale"):
        PretrainConfig(scale_range=(1.4, 1.1))
