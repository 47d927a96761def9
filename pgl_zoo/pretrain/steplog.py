"""The pretraining loop's losses with as few host syncs as a GPU run needs.

Each step's losses stay on the device: :meth:`LossWatch.add` keeps the last step's (total, global,
local) and the first step whose loss was not finite, without copying anything to the host. Only
:meth:`LossWatch.check` (the trainer calls it on logged steps, checkpoint steps and before the
checkpoint written on Ctrl-C) copies them to the host once (averaged over ranks under DDP: one
all_reduce) and raises if any step since the previous check had a non-finite loss, naming that
step exactly. On the CPU the copies cost nothing; on a GPU each one waits for the queued work.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist

from ..errors import PglZooError
from .distributed import DistInfo

_NEVER = 2**62  # "no bad step yet"


class LossWatch:
    """Losses of the steps since the last check, kept on ``info.device``."""

    def __init__(self, info: DistInfo, out: Path) -> None:
        self.info, self.out = info, out
        self.latest: torch.Tensor | None = None  # (total, global, local) of the last step added
        self.first_bad: torch.Tensor | None = None  # int64 step, _NEVER while every loss was finite
        self.bad_value: torch.Tensor | None = None  # the total loss at step first_bad
        self.unchecked = False  # steps were added since the last check

    def add(self, losses, step: int) -> None:
        """Record step ``step``'s losses (:class:`pgl_zoo.pretrain.model.Losses`); no host sync."""
        local = losses.local if losses.local is not None else torch.zeros((), device=losses.total.device)
        values = torch.stack([losses.total.detach().float(), losses.global_.detach().float(), local.detach().float()])
        finite = torch.isfinite(values).all()
        if self.first_bad is None:
            self.first_bad, self.bad_value = torch.where(finite, _NEVER, step), values[0]
        else:
            first = ~finite & (self.first_bad == _NEVER)
            self.first_bad = torch.where(first, step, self.first_bad)
            self.bad_value = torch.where(first, values[0], self.bad_value)
        self.latest = values
        self.unchecked = True

    def check(self) -> tuple[float, float, float]:
        """The last step's (total, global, local) losses, averaged over ranks, as floats (one host sync);
        raises PglZooError naming the first step since the last check whose loss was not finite on any rank.
        Every rank must call it at the same step (it holds a collective under DDP)."""
        assert self.latest is not None and self.first_bad is not None, "check() before any add()"
        # one vector, one all_reduce (sum): the three losses and the number of ranks that saw a bad step
        packed = torch.cat([self.latest, (self.first_bad < _NEVER).float()[None]])
        if self.info.distributed:
            dist.all_reduce(packed)
            packed[:3] /= self.info.world_size
        total, glob, loc, bad_ranks = packed.tolist()
        if bad_ranks > 0:
            first = self.first_bad.clone()
            if self.info.distributed:  # every rank knows bad_ranks > 0, so every rank joins this one
                dist.all_reduce(first, op=dist.ReduceOp.MIN)
            step = int(first)
            value = float(self.bad_value) if int(self.first_bad) == step else float("nan")  # else another rank's
            raise PglZooError(f"{self.out}: the loss became {value} at step {step}; lower --lr (last good "
                              "checkpoint kept)")
        self.unchecked = False
        self.first_bad = None
        return total, glob, loc
