"""PGL pretraining: views with a recorded spatial prior, prior-guided alignment, BYOL frame, trainer.

Public contract:

* :func:`sample_view_pair` (views.py): two views of a (z, y, x) volume, each with ``.image`` and
  ``.to_source`` (4x4 affine, view voxel index -> source voxel index).
* :func:`align_views` (align.py): feature batches (N, C, z, y, x) of the two views at a stride,
  resampled onto one grid over each sample's overlap.
* :func:`pretrain` with :class:`PretrainConfig` (trainer.py, config.py); :func:`export_run`.
"""

from __future__ import annotations

import importlib

from .config import PretrainConfig

__all__ = ["PretrainConfig", "View", "align_views", "export_run", "pretrain", "sample_view_pair"]

# Imported when first used, so that importing a light module of this package (data.py, cache.py: what the
# `pgl-zoo prepare -j N` worker processes run) does not import torch.
_LAZY = {"pretrain": "trainer", "export_run": "export", "align_views": "align", "View": "views",
         "sample_view_pair": "views"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(name)
