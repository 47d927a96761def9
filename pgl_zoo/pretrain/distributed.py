"""torch.distributed set-up: the same code on one CPU process, one GPU, several GPUs or nodes.

Launched by ``torchrun`` (which sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT), a process
group is created with ``nccl`` on CUDA and ``gloo`` on CPU. Without those variables, a single
process runs without a process group.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

INIT_TIMEOUT_MIN = 30  # the data are prepared before the group is made (trainer.pretrain): no rank waits long


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def launch_rank() -> tuple[int, int]:
    """(rank, world size) as torchrun sets them, before any process group exists ((0, 1) without torchrun)."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> cuda:LOCAL_RANK when available, else cpu; otherwise the named device."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device(f"cuda:{local_rank}")
    return device


def setup(device_name: str = "auto") -> DistInfo:
    """Initialise the process group when launched by torchrun; return rank, world size and device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend, timeout=timedelta(minutes=INIT_TIMEOUT_MIN))
    return DistInfo(rank, world, local_rank, device)


def cleanup(synchronize: bool = False) -> None:
    """Destroy the process group. With ``synchronize`` (a run that ended on every rank) the ranks first meet
    at a barrier, so that none tears its connections down while rank 0 still writes the run's last files:
    ranks that left early made gloo abort rank 0 at exit now and then ("terminate called without an active
    exception"), and a multi-node ``torchrun`` then failed the whole run after it had finished. Without it
    (an error, a peer may be gone) the group is destroyed at once."""
    if dist.is_initialized():
        try:
            if synchronize:
                dist.barrier()
        finally:
            dist.destroy_process_group()
