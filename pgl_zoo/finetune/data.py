"""Labelled data sets for fine-tuning: finding image/label pairs, checking and preprocessing them, patches.

Layouts understood by :func:`find_cases`:

* Medical Segmentation Decathlon: ``DIR/imagesTr/NAME.nii.gz`` with ``DIR/labelsTr/NAME.nii.gz``;
* nnU-Net: ``DIR/imagesTr/NAME_0000.nii.gz`` with ``DIR/labelsTr/NAME.nii.gz`` (single channel);
* a CSV file with ``image,label`` columns (header optional), paths relative to the CSV's folder.

An optional ``DIR/dataset.json`` gives label names (MSD ``{"0": "background", ...}`` or nnU-Net v2
``{"background": 0, ...}``). Arrays are (z, y, x); spacings (x, y, z) in mm.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..cards import Preprocessing
from ..errors import DataError
from ..imaging.files import has_volume_suffix, nnunet_channel, strip_volume_suffix
from ..imaging.geometry import geometry_differences
from ..imaging.read import read_image
from ..label_maps import check_label_values
from ..preprocessing.scan import preprocess_image, preprocess_label

__all__ = [
    "CaseFiles",
    "CaseArrays",
    "find_cases",
    "read_label_names",
    "check_same_geometry",
    "load_case",
    "load_cases",
    "sample_patch",
]



@dataclass(frozen=True)
class CaseFiles:
    """One labelled case on disk: an image file (or DICOM folder) and its label map."""

    name: str
    image: Path
    label: Path


@dataclass
class CaseArrays:
    """One preprocessed case in memory: ``image`` float32 (z, y, x), ``label`` int64 (z, y, x)."""

    name: str
    image: np.ndarray
    label: np.ndarray

    @property
    def foreground(self) -> dict[int, np.ndarray]:
        """Flat indices of the voxels of each class other than 0 that occurs in ``label``, ascending (cached)."""
        cached = getattr(self, "_foreground", None)
        if cached is None:
            flat = self.label.ravel()
            order = np.flatnonzero(flat)
            values = flat[order]
            sort = np.argsort(values, kind="stable")  # stable: indices stay ascending within a class
            ordered = order[sort]
            classes, starts = np.unique(values[sort], return_index=True)
            cached = {int(c): ordered[a:b] for c, a, b in zip(classes, starts, [*starts[1:], sort.size], strict=True)}
            self._foreground = cached
        return cached


def _case_name(path: Path) -> str:
    return strip_volume_suffix(path.name)


def _pairs_from_folder(root: Path) -> list[CaseFiles]:
    images_dir, labels_dir = root / "imagesTr", root / "labelsTr"
    if not images_dir.is_dir() or not labels_dir.is_dir():
        raise DataError(f"{root}: expected imagesTr/ and labelsTr/ folders (MSD / nnU-Net layout) or a CSV file")
    labels = {_case_name(p): p for p in sorted(labels_dir.iterdir())
              if has_volume_suffix(p.name) and not p.name.startswith(".")}
    pairs: list[CaseFiles] = []
    unmatched: list[str] = []
    for image in sorted(images_dir.iterdir()):
        if image.name.startswith(".") or not has_volume_suffix(image.name):
            continue
        name = _case_name(image)
        stem, channel = nnunet_channel(name)
        if name not in labels and channel is not None and stem in labels:
            if channel != "0000":
                continue  # another channel of a multi-channel nnU-Net case: only channel 0000 is used
            name = stem
        if name not in labels:
            unmatched.append(image.name)
            continue
        pairs.append(CaseFiles(name, image, labels[name]))
    if unmatched:
        raise DataError(f"{images_dir}: no label in {labels_dir} for {', '.join(unmatched[:3])}"
                        + (f" and {len(unmatched) - 3} more" if len(unmatched) > 3 else ""))
    return pairs


def _pairs_from_csv(path: Path) -> list[CaseFiles]:
    try:
        rows = [row for row in csv.reader(path.read_text().splitlines()) if row and any(c.strip() for c in row)]
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror})") from None
    if rows and [c.strip().lower() for c in rows[0][:2]] == ["image", "label"]:
        rows = rows[1:]
    pairs = []
    for number, row in enumerate(rows, start=1):
        if len(row) < 2:
            raise DataError(f"{path}: row {number} needs two columns image,label, got {row}")
        image, label = (path.parent / row[0].strip()), (path.parent / row[1].strip())
        pairs.append(CaseFiles(_case_name(image), image, label))
    return pairs


def find_cases(data: str | Path) -> list[CaseFiles]:
    """The image/label pairs of a data set folder (MSD / nnU-Net layout) or CSV file, sorted by name.

    Raises DataError naming the folder when it holds no case, or an image without a label.
    """
    data = Path(data)
    if not data.exists():
        raise DataError(f"{data}: no such file or folder")
    pairs = _pairs_from_csv(data) if data.is_file() else _pairs_from_folder(data)
    if not pairs:
        raise DataError(f"{data}: no labelled cases found")
    names = [p.name for p in pairs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DataError(f"{data}: case names occur more than once: {', '.join(duplicates[:5])}")
    return sorted(pairs, key=lambda p: p.name)


def read_label_names(data: str | Path) -> dict[str, str] | None:
    """Label names ``{"0": "background", "1": ...}`` from ``dataset.json`` beside the data, if any."""
    data = Path(data)
    path = (data if data.is_dir() else data.parent) / "dataset.json"
    if not path.is_file():
        return None
    return label_names_from_file(path)


def label_names_from_file(path: str | Path) -> dict[str, str] | None:
    """Label names from a ``dataset.json`` (its ``labels``: MSD index -> name, or nnU-Net v2 name -> index)
    or a ``card.json`` (its ``label_names``); None when the file gives none. DataError naming the file when
    it is not JSON or not a JSON object, or when those fields are not objects."""
    path = Path(path)
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(document, dict):
        raise DataError(f"{path}: expected a JSON object (dataset.json with \"labels\" or card.json with "
                        f"\"label_names\"), got a JSON {type(document).__name__}")
    for field in ("label_names", "labels"):
        if field in document and not isinstance(document[field], dict):
            raise DataError(f"{path}: \"{field}\" must be a JSON object of label names, got a JSON "
                            f"{type(document[field]).__name__}")
    if "label_names" in document:
        return {str(k): str(v) for k, v in document["label_names"].items()} or None
    out: dict[str, str] = {}
    for key, value in (document.get("labels") or {}).items():
        if str(key).lstrip("-").isdigit():  # MSD: index -> name
            out[str(int(key))] = str(value)
        elif isinstance(value, int):  # nnU-Net v2: name -> index
            out[str(value)] = str(key)
    return dict(sorted(out.items(), key=lambda kv: int(kv[0]))) or None


def check_same_geometry(image: sitk.Image, label: sitk.Image, image_path: Path, label_path: Path) -> None:
    """Raise DataError naming both files unless they lie on the same grid
    (:func:`pgl_zoo.imaging.geometry.geometry_differences`)."""
    problems = geometry_differences(image, label)
    if problems:
        raise DataError(f"{label_path} does not match the geometry of {image_path}: {'; '.join(problems)}")


def load_case(pair: CaseFiles, prep: Preprocessing, num_classes: int) -> CaseArrays:
    """Read, check and preprocess one pair: intensities as ``prep`` says, label by nearest neighbour.

    Raises DataError when the geometries differ or a label value is not an integer in 0..num_classes-1
    (:func:`pgl_zoo.label_maps.check_label_values`).
    """
    image = read_image(pair.image)
    label = read_image(pair.label)
    check_same_geometry(image, label, pair.image, pair.label)
    check_label_values(sitk.GetArrayViewFromImage(label), pair.label, num_classes)
    prepared = preprocess_image(image, prep)
    return CaseArrays(pair.name, prepared.array, preprocess_label(label, prepared.grid))


def load_cases(pairs: Sequence[CaseFiles], prep: Preprocessing, num_classes: int) -> list[CaseArrays]:
    """:func:`load_case` for every pair (all kept in memory). A :class:`CaseArrays` (already preprocessed as
    ``prep`` says, e.g. by a study that holds its data as arrays) is used as it is."""
    return [pair if isinstance(pair, CaseArrays) else load_case(pair, prep, num_classes) for pair in pairs]


def _pad_to(array: np.ndarray, shape: Sequence[int], value: float) -> np.ndarray:
    pad = [(0, max(0, s - n)) for n, s in zip(array.shape, shape, strict=True)]
    return np.pad(array, pad, constant_values=value) if any(p[1] for p in pad) else array


def sample_patch(
    case: CaseArrays, patch_zyx: Sequence[int], rng: np.random.Generator, foreground_probability: float = 0.33
) -> tuple[np.ndarray, np.ndarray]:
    """A random (image, label) patch of ``patch_zyx`` voxels; with ``foreground_probability`` it is
    centred (up to the volume edge) on a labelled voxel: a class drawn uniformly among the classes the
    case holds, then a voxel of that class (as nnU-Net oversamples foreground), so that a small organ is
    seen as often as a large one. Volumes smaller than the patch are padded at the far end (image with
    its minimum, label with 0)."""
    image = _pad_to(case.image, patch_zyx, float(case.image.min()))
    label = _pad_to(case.label, patch_zyx, 0)
    shape = image.shape
    foreground = case.foreground
    if foreground and rng.random() < foreground_probability:
        classes = sorted(foreground)
        # One class: no class draw (the random stream of a one-class task is what it was before classes).
        voxels = foreground[classes[int(rng.integers(len(classes)))] if len(classes) > 1 else classes[0]]
        centre = np.unravel_index(voxels[rng.integers(voxels.size)], case.label.shape)
        start = [int(np.clip(c - p // 2, 0, s - p)) for c, p, s in zip(centre, patch_zyx, shape, strict=True)]
    else:
        start = [int(rng.integers(0, s - p + 1)) for p, s in zip(patch_zyx, shape, strict=True)]
    window = tuple(slice(s, s + p) for s, p in zip(start, patch_zyx, strict=True))
    return image[window], label[window]
