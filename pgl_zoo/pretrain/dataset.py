"""The stream of view pairs: a map-style dataset indexed by *global sample index*, and a sampler.

Sample ``g`` is a pure function of (seed, g): its volume is entry ``g % V`` of a permutation of the
V volumes drawn from (seed, epoch = g // V), and its views and augmentations come from
``numpy.random.default_rng([seed, g])``. So the data state of a run is just its step counter, the
stream does not depend on the number of workers, and resuming at step k reproduces the stream.
Step k of a run with world size W and per-rank batch B uses samples ``(k*W + rank)*B + i``: ranks
read disjoint samples and, within an epoch, distinct volumes.
"""

from __future__ import annotations

import signal
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .augment import IntensityAugment
from .data import PretrainVolume
from .view_defaults import FLIP_P, OVERLAP_RANGE, SCALE_RANGE
from .views import sample_view_pair

OPEN_VOLUMES = 64


@dataclass(frozen=True)
class ViewOptions:
    """Spatial view options (see :func:`sample_view_pair`); defaults from :mod:`.view_defaults`."""

    scale_range: tuple[float, float] = SCALE_RANGE
    overlap_range: tuple[float, float] = OVERLAP_RANGE
    flip_p: float = FLIP_P
    rotate: bool = False


class ViewPairDataset(Dataset):
    """``dataset[g]`` -> (view_a (1, z, y, x), view_b (1, z, y, x), to_source_a (4, 4), to_source_b (4, 4))."""

    def __init__(
        self,
        volumes: Sequence[PretrainVolume],
        patch_size: tuple[int, int, int],
        seed: int = 0,
        views: ViewOptions = ViewOptions(),  # noqa: B008 - frozen dataclass
        augment: IntensityAugment = IntensityAugment(),  # noqa: B008
    ) -> None:
        if not volumes:
            raise ValueError("no volumes")
        self.volumes = list(volumes)
        self.patch_size = tuple(int(p) for p in patch_size)
        self.seed = int(seed)
        self.views = views
        self.augment = augment
        self._arrays: OrderedDict[int, np.ndarray] = OrderedDict()  # the most recently used memory maps
        self._perms: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return 2**62  # an endless stream; the sampler decides which indices are read

    def volume_index(self, g: int) -> int:
        n = len(self.volumes)
        epoch = g // n
        perm = self._perms.get(epoch)
        if perm is None:
            perm = np.random.default_rng([self.seed, 1, epoch]).permutation(n)
            self._perms = {epoch: perm}
        return int(perm[g % n])

    def _array(self, i: int) -> np.ndarray:
        """Volume i as stored (int16 scan units or float16/32 input), memory-mapped. At most
        ``OPEN_VOLUMES`` maps stay open per process (each holds a file descriptor: an archive of 10,000
        scans would exceed the usual limit of 1,024)."""
        array = self._arrays.pop(i, None)
        if array is None:
            array = self.volumes[i].load(mmap=True)
            if len(self._arrays) >= OPEN_VOLUMES:
                self._arrays.popitem(last=False)
        self._arrays[i] = array
        return array

    def _pad_value(self, i: int, array: np.ndarray) -> float:
        """A view's padding outside the volume: its minimum (recorded in the cache; else read once)."""
        volume = self.volumes[i]
        if volume.minimum is None:
            volume.minimum = float(array.min())
        return volume.minimum

    def __getitem__(self, g: int):
        i = self.volume_index(int(g))
        volume = self._array(i)
        rng = np.random.default_rng([self.seed, int(g)])
        v = self.views
        view_a, view_b = sample_view_pair(volume, self.patch_size, rng, scale_range=v.scale_range,
                                          overlap_range=v.overlap_range, flip_p=v.flip_p, rotate=v.rotate,
                                          pad_value=self._pad_value(i, volume))
        to_input = self.volumes[i].intensity  # stored values -> network input (cache.py), per view
        if to_input is not None:
            to_input.apply_(view_a.image)
            to_input.apply_(view_b.image)
        a = self.augment(view_a.image, rng)
        b = self.augment(view_b.image, rng)
        return a[None], b[None], view_a.to_source, view_b.to_source


@dataclass
class StepSampler(Sampler[int]):
    """Global sample indices for steps ``start_step`` .. ``total_steps - 1`` of one rank."""

    start_step: int
    total_steps: int
    batch_size: int
    rank: int = 0
    world_size: int = 1

    def __iter__(self) -> Iterator[int]:
        for step in range(self.start_step, self.total_steps):
            base = (step * self.world_size + self.rank) * self.batch_size
            yield from range(base, base + self.batch_size)

    def __len__(self) -> int:
        return max(0, self.total_steps - self.start_step) * self.batch_size


def _worker_init(worker_id: int) -> None:
    """One thread per worker; Ctrl-C is left to the main process, which stops at a step boundary
    (randomness is per sample, so workers need no seeding)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)


def make_loader(
    dataset: ViewPairDataset, sampler: StepSampler, num_workers: int, pin_memory: bool = False,
    prefetch_factor: int = 4,
) -> DataLoader:
    """A DataLoader yielding one batch per training step, in step order."""
    kwargs = {}
    if num_workers > 0:
        kwargs = {"worker_init_fn": _worker_init, "prefetch_factor": prefetch_factor, "persistent_workers": False}
    return DataLoader(dataset, batch_size=sampler.batch_size, sampler=sampler, num_workers=num_workers,
                      pin_memory=pin_memory, drop_last=False, **kwargs)
