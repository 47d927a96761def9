"""A PNG preview of a segmentation: three orthogonal slices with the label map overlaid (matplotlib)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import PglZooError

__all__ = ["write_preview"]


def _centre(label: np.ndarray) -> tuple[int, int, int]:
    """The labelled voxels' centroid (z, y, x), or the volume centre when nothing is labelled."""
    points = np.argwhere(label > 0)
    if len(points):
        return tuple(int(round(v)) for v in points.mean(axis=0))  # type: ignore[return-value]
    return tuple(s // 2 for s in label.shape)  # type: ignore[return-value]


def write_preview(
    image: sitk.Image, label: sitk.Image, path: str | Path, label_names: dict[str, str] | None = None,
    title: str | None = None,
) -> Path:
    """Write axial, coronal and sagittal slices through the label centroid, labels in colour.

    ``image`` and ``label`` share a geometry (the label as ``segment`` writes it). Slices are shown
    with the voxel spacing as aspect ratio; intensities between the 1st and 99th percentile.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.colors import ListedColormap
    except ImportError:
        raise PglZooError("--preview needs matplotlib: pip install 'pgl-zoo[plot]'") from None
    volume = sitk.GetArrayFromImage(image).astype(np.float32)
    labels = sitk.GetArrayFromImage(label)
    sx, sy, sz = image.GetSpacing()
    z, y, x = _centre(labels)
    low, high = np.percentile(volume, [1, 99])
    views = [
        ("axial", volume[z], labels[z], sy / sx),
        ("coronal", volume[:, y][::-1], labels[:, y][::-1], sz / sx),
        ("sagittal", volume[:, :, x][::-1], labels[:, :, x][::-1], sz / sy),
    ]
    count = max(int(labels.max(initial=0)), 1)
    colours = plt.get_cmap("tab20")(np.arange(count) % 20)
    cmap = ListedColormap(colours)
    figure, axes = plt.subplots(1, 3, figsize=(12, 4.4))
    for axis, (name, slice_, overlay, aspect) in zip(axes, views, strict=True):
        axis.imshow(slice_, cmap="gray", vmin=low, vmax=high, aspect=aspect, interpolation="nearest")
        masked = np.ma.masked_where(overlay == 0, overlay)
        axis.imshow(masked - 1, cmap=cmap, vmin=0, vmax=max(count - 1, 1), alpha=0.45, aspect=aspect,
                    interpolation="nearest")
        axis.set_title(name)
        axis.axis("off")
    present = [int(v) for v in np.unique(labels) if v > 0]
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
