"""The project's defaults for a pair of views, in one place (no torch: :mod:`.config` imports it).

:func:`pgl_zoo.pretrain.views.sample_view_pair`, :class:`pgl_zoo.pretrain.dataset.ViewOptions` and
:class:`pgl_zoo.pretrain.config.PretrainConfig` take their defaults from here; why these values, see
:mod:`pgl_zoo.pretrain.views`.
"""

from __future__ import annotations

SCALE_RANGE = (0.75, 1.5)  # crop size / patch size, drawn per view (isotropic)
OVERLAP_RANGE = (0.3, 0.8)  # overlap fraction of the two crops (intersection / smaller crop)
FLIP_P = 0.5  # probability of a flip, per view and axis
