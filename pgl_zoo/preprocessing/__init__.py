"""Preprocessing: a scan read by :mod:`pgl_zoo.imaging` turned into network input, and results turned back.

* :mod:`.grid`: reorientation and resampling to a spacing (x, y, z) in mm;
* :mod:`.intensity`: :class:`~.intensity.IntensityMap` (window, normalisation) and its construction;
* :mod:`.scan`: :func:`~.scan.preprocess_image` and :func:`~.scan.preprocess_label`, as a card's
  :class:`pgl_zoo.cards.Preprocessing` says;
* :mod:`.restore`: :func:`~.restore.restore_label`, a label map back onto the scan's own grid.

Arrays are (z, y, x); SimpleITK sizes and spacings (x, y, z), in mm.
"""
