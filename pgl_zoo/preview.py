"""PNG previews of segmentations: three orthogonal slices with label maps overlaid (matplotlib).

:func:`write_preview` draws one label map; :func:`write_comparison_preview` draws several label maps
of the same scan (for example the expert's and two predictions) one row each, through the same slices.
Arrays are (z, y, x); SimpleITK spacings (x, y, z) in mm.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import PglZooError

__all__ = ["write_preview", "write_comparison_preview"]


def _centre(label: np.ndarray) -> tuple[int, int, int]:
    """The labelled voxels' centroid (z, y, x), or the volume centre when nothing is labelled."""
    points = np.argwhere(label > 0)
    if len(points):
        return tuple(int(round(v)) for v in points.mean(axis=0))  # type: ignore[return-value]
    return tuple(s // 2 for s in label.shape)  # type: ignore[return-value]


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PglZooError("a preview needs matplotlib: pip install 'pgl-zoo[plot]'") from None
    return plt


def _views(array: np.ndarray, centre: tuple[int, int, int]) -> list[np.ndarray]:
    """Axial, coronal and sagittal slices (z, y, x) through ``centre``; z runs upwards in the last two."""
    z, y, x = centre
    return [array[z], array[:, y][::-1], array[:, :, x][::-1]]


def _draw(image: sitk.Image, rows: Sequence[tuple[str, sitk.Image]], path: str | Path,
          label_names: dict[str, str] | None, title: str | None, centre_from: sitk.Image) -> Path:
    """One row per ``(row title, label image)``, three orthogonal slices through ``centre_from``'s centroid."""
    plt = _pyplot()
    from matplotlib.colors import ListedColormap

    volume = sitk.GetArrayFromImage(image).astype(np.float32)
    arrays = [(name, sitk.GetArrayFromImage(label)) for name, label in rows]
    for name, array in arrays:
        if array.shape != volume.shape:
            raise PglZooError(f"preview: label map {name!r} has shape {array.shape}, the image {volume.shape}")
    sx, sy, sz = image.GetSpacing()
    aspects = (sy / sx, sz / sx, sz / sy)
    centre = _centre(sitk.GetArrayFromImage(centre_from))
    low, high = np.percentile(volume, [1, 99])
    count = max(max(int(a.max(initial=0)) for _, a in arrays), 1)
    colours = plt.get_cmap("tab20")(np.arange(count) % 20)
    cmap = ListedColormap(colours)
    figure, axes = plt.subplots(len(arrays), 3, figsize=(12, 4.2 * len(arrays) + 0.2), squeeze=False)
    for row, (row_title, labels) in zip(axes, arrays, strict=True):
        for axis, view, slice_, overlay, aspect in zip(row, ("axial", "coronal", "sagittal"), _views(volume, centre),
                                                       _views(labels, centre), aspects, strict=True):
            axis.imshow(slice_, cmap="gray", vmin=low, vmax=high, aspect=aspect, interpolation="nearest")
            masked = np.ma.masked_where(overlay == 0, overlay)
            axis.imshow(masked - 1, cmap=cmap, vmin=0, vmax=max(count - 1, 1), alpha=0.45, aspect=aspect,
                        interpolation="nearest")
            axis.set_title(f"{row_title}: {view}" if row_title else view, fontsize=10)
            axis.axis("off")
    present = sorted({int(v) for _, a in arrays for v in np.unique(a) if v > 0})
    if present:
        names = label_names or {}
        handles = [plt.Rectangle((0, 0), 1, 1, color=colours[(v - 1) % len(colours)]) for v in present[:12]]
        figure.legend(handles, [names.get(str(v), str(v)) for v in present[:12]], loc="lower center",
                      ncol=min(6, len(present)), frameon=False)
    if title:
        figure.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(figure)
    return path


def write_preview(
    image: sitk.Image, label: sitk.Image, path: str | Path, label_names: dict[str, str] | None = None,
    title: str | None = None,
) -> Path:
    """Write axial, coronal and sagittal slices through the label centroid, labels in colour.

    ``image`` and ``label`` share a geometry (the label as ``segment`` writes it). Slices are shown
    with the voxel spacing as aspect ratio; intensities between the 1st and 99th percentile.
    """
    return _draw(image, [("", label)], path, label_names, title, centre_from=label)


def write_comparison_preview(
    image: sitk.Image, rows: Sequence[tuple[str, sitk.Image]], path: str | Path,
    label_names: dict[str, str] | None = None, title: str | None = None,
) -> Path:
    """Write one row of axial, coronal and sagittal slices per ``(row title, label map)``.

    Every label map has ``image``'s geometry. All rows cut the scan through the same voxel: the
    centroid of the first row's labels (put the reference, e.g. the expert label, first), so that
    the rows compare like with like. Row titles may carry a score, e.g. ``"prediction (Dice 0.95)"``.
    """
    if not rows:
        raise PglZooError("preview: no label maps to draw")
    return _draw(image, rows, path, label_names, title, centre_from=rows[0][1])
