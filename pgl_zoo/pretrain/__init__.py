"""PGL pretraining: views with a recorded spatial prior, prior-guided alignment, BYOL frame, trainer.

Public contract:

* :func:`sample_view_pair` (views.py): two views of a (z, y, x) volume, each with ``.image`` and
  ``.to_source`` (4x4 affine, view voxel index -> source voxel index).
* :func:`align_views` (align.py): feature batches (N, C, z, y, x) of the two views at a stride,
  resampled onto one grid over each sample's overlap.
* :func:`pretrain` with :class:`PretrainConfig` (trainer.py, config.py); :func:`export_run`.
"""

from __future__ import annotations

from .align import align_views
from .config import PretrainConfig
from .views import View, sample_view_pair

__all__ = ["PretrainConfig", "View", "align_views", "export_run", "pretrain", "sample_view_pair"]


def __getattr__(name: str):
    if name == "pretrain":
        from .trainer import pretrain

        return pretrain
    if name == "export_run":
        from .export import export_run

        return export_run
    raise AttributeError(name)
