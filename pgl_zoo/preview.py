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

from .atomic import atomic_write
from .errors import PglZooError

__all__ = ["write_preview", "write_comparison_preview"]


def _centre(label: np.ndarray) -> tuple[int, int, int]:
    """The slice (z, y, x) with the most labelled voxels along each axis, or the volume centre when
    nothing is labelled. (A centroid can fall between two organs, e.g. between the lungs.)"""
    if not (label > 0).any():
        return tuple(s // 2 for s in label.shape)  # type: ignore[return-value]
    mask = label > 0
    return tuple(int(np.argmax(mask.sum(axis=tuple(a for a in range(3) if a != axis))))  # type: ignore[return-value]
                 for axis in range(3))


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
          label_names: dict[str, str] | None, title: str | None, outline_first: bool = False) -> Path:
    """One row per ``(row title, label image)``: three orthogonal slices through the first row's labels.

    ``outline_first``: rows after the first also show the first row's labels as a yellow outline.
    """
    plt = _pyplot()
    from matplotlib.colors import ListedColormap

    volume = sitk.GetArrayFromImage(image).astype(np.float32)
    arrays = [(name, sitk.GetArrayFromImage(label)) for name, label in rows]
    for name, array in arrays:
        if array.shape != volume.shape:
            raise PglZooError(f"preview: label map {name!r} has shape {array.shape}, the image {volume.shape}")
    sx, sy, sz = image.GetSpacing()
    aspects = (sy / sx, sz / sx, sz / sy)
    centre = _centre(arrays[0][1])
    reference = _views(arrays[0][1] > 0, centre)
    low, high = np.percentile(volume, [1, 99])
    count = max(max(int(a.max(initial=0)) for _, a in arrays), 1)
    colours = plt.get_cmap("tab20")(np.arange(count) % 20)
    cmap = ListedColormap(colours)
    depth, height, width = volume.shape
    row_inches = 4.0 * max(height * sy, depth * sz) / (width * sx)  # the tallest panel, 4 inches wide
    figure, axes = plt.subplots(len(arrays), 3, figsize=(12, (row_inches + 0.4) * len(arrays) + 0.8), squeeze=False)
    for r, (row, (row_title, labels)) in enumerate(zip(axes, arrays, strict=True)):
        panels = zip(row, ("axial", "coronal", "sagittal"), _views(volume, centre), _views(labels, centre), aspects,
                     reference, strict=True)
        for axis, view, slice_, overlay, aspect, outline in panels:
            axis.imshow(slice_, cmap="gray", vmin=low, vmax=high, aspect=aspect, interpolation="nearest")
            masked = np.ma.masked_where(overlay == 0, overlay)
            axis.imshow(masked - 1, cmap=cmap, vmin=0, vmax=max(count - 1, 1), alpha=0.45, aspect=aspect,
                        interpolation="nearest")
            if outline_first and r > 0 and outline.any():
                axis.contour(outline, levels=[0.5], colors="yellow", linewidths=0.8)
            axis.set_title(f"{row_title}: {view}" if row_title else view, fontsize=10)
            axis.axis("off")
    present = sorted({int(v) for _, a in arrays for v in np.unique(a) if v > 0})
    if present:
        names = label_names or {}
        handles = [plt.Rectangle((0, 0), 1, 1, color=colours[(v - 1) % len(colours)]) for v in present[:12]]
        labels_text = [names.get(str(v), str(v)) for v in present[:12]]
        if outline_first and len(arrays) > 1:
            handles.append(plt.Line2D([0], [0], color="yellow"))
            labels_text.append(f"outline: {arrays[0][0]}")
        figure.legend(handles, labels_text, loc="lower center", ncol=min(6, len(handles)), frameon=False)
    if title:
        figure.suptitle(title)
    figure.tight_layout(rect=(0, 0.04, 1, 0.97 if title else 1))
    path = Path(path)
    try:  # atomic: an existing PNG is replaced only by a complete one
        atomic_write(path, lambda tmp: figure.savefig(tmp, dpi=80, bbox_inches="tight", format="png"), suffix=".png")
    finally:
        plt.close(figure)
    return path


def write_preview(
    image: sitk.Image, label: sitk.Image, path: str | Path, label_names: dict[str, str] | None = None,
    title: str | None = None,
) -> Path:
    """Write axial, coronal and sagittal slices through the labels (the slice with most labelled voxels
    along each axis), labels in colour.

    ``image`` and ``label`` share a geometry (the label as ``segment`` writes it). Slices are shown
    with the voxel spacing as aspect ratio; intensities between the 1st and 99th percentile.
    """
    return _draw(image, [("", label)], path, label_names, title)


def write_comparison_preview(
    image: sitk.Image, rows: Sequence[tuple[str, sitk.Image]], path: str | Path,
    label_names: dict[str, str] | None = None, title: str | None = None,
) -> Path:
    """Write one row of axial, coronal and sagittal slices per ``(row title, label map)``.

    Every label map has ``image``'s geometry. All rows cut the scan through the same slices, chosen
    on the first row's labels, and the later rows outline the first row's labels in yellow: put the
    reference (e.g. the expert label) first, so that each prediction is seen against it. Row titles
    may carry a score, e.g. ``"prediction (Dice 0.95)"``.
    """
    if not rows:
        raise PglZooError("preview: no label maps to draw")
    return _draw(image, rows, path, label_names, title, outline_first=True)
