"""Sample data shipped inside pgl-zoo, in the style of ``skimage.data``: real scans, no download.

Example::

    from pgl_zoo.datasets import sample_lungs_ct
    sample = sample_lungs_ct()
    sample.case_ids                      # ('lung_000', 'lung_001', ..., 'lung_005')
    image_path, label_path = sample.pairs[0]
    sample.folder                        # nnU-Net layout: ``pgl-zoo finetune --data`` takes it as-is
    sample.copy_to("lungs/")             # a writable copy

The files are NIfTI-1 (``.nii.gz``) and resolve inside the installed package (a wheel included),
so they work without ``../shared`` and without network. Read them with SimpleITK: sizes,
spacings and origins are (x, y, z) in millimetres, ``sitk.GetArrayFromImage`` gives arrays in
(z, y, x) order. This module does not import torch.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

__all__ = ["SampleDataset", "sample_lungs_ct", "SAMPLE_ROOT"]

SAMPLE_ROOT = Path(str(resources.files("pgl_zoo").joinpath("sample_data")))
"""The folder that holds the package's sample data sets (inside the installed package)."""

LCTSC_LICENSE_LINE = (
    "LCTSC (TCIA), CC BY 3.0: Yang J, Sharp G, Veeraraghavan H, et al., Data from Lung CT Segmentation "
    "Challenge, The Cancer Imaging Archive, 2017, DOI 10.7937/K9/TCIA.2017.3r3fvz08; "
    "resampled to 3 mm and cropped by pgl-zoo"
)


@dataclass(frozen=True)
class SampleDataset:
    """A labelled sample data set on disk, in nnU-Net layout (``imagesTr/NAME_0000.nii.gz``, ``labelsTr/NAME.nii.gz``).

    Attributes:
        name: the data set's short name.
        folder: the folder holding ``imagesTr/``, ``labelsTr/``, ``dataset.json``, ``README.md`` and ``LICENSE``.
        case_ids: the case names, sorted (``lung_000``, ...).
        pairs: ``(image, label)`` paths per case, in the order of ``case_ids``. Images are CT in
            Hounsfield units (int16), labels uint8 with 0 background and 1 lungs (both lungs), on the
            image's exact grid. Spacing is 3.0 mm along x, y and z.
        labels: label value -> name.
        license: the full text of the data's ``LICENSE`` file (CC BY 3.0, with attribution).
        license_line: one line naming the source, license and citation.
    """

    name: str
    folder: Path
    case_ids: tuple[str, ...]
    pairs: tuple[tuple[Path, Path], ...]
    labels: dict[int, str]
    license: str
    license_line: str

    @property
    def images(self) -> tuple[Path, ...]:
        """The image files (CT, HU), in the order of ``case_ids``."""
        return tuple(image for image, _ in self.pairs)

    @property
    def label_maps(self) -> tuple[Path, ...]:
        """The label files (uint8, 1 = lungs), in the order of ``case_ids``."""
        return tuple(label for _, label in self.pairs)

    def files(self) -> list[Path]:
        """Every file of the data set (volumes, ``dataset.json``, ``README.md``, ``LICENSE``), sorted."""
        return sorted(p for p in self.folder.rglob("*") if p.is_file() and not p.name.startswith("."))

    @property
    def size_bytes(self) -> int:
        """Total size on disk of :meth:`files`, in bytes."""
        return sum(p.stat().st_size for p in self.files())

    def copy_to(self, folder: str | Path, overwrite: bool = False) -> SampleDataset:
        """Copy the data set (all of :meth:`files`, same layout) into ``folder``; returns the copy.

        ``folder`` is created if needed. A folder that already holds anything is refused with
        FileExistsError unless ``overwrite=True``, which allows adding the sample beside the
        folder's other files. Existing files are never replaced, with or without ``overwrite``: a
        file that is already there with the same bytes is kept as it is, and one with other bytes
        raises FileExistsError before anything is copied.
        """
        target = Path(folder)
        if target.exists() and not target.is_dir():
            raise FileExistsError(f"{target}: exists and is not a folder")
        if target.is_dir() and any(target.iterdir()) and not overwrite:
            raise FileExistsError(f"{target}: folder is not empty (pass overwrite=True to add the sample beside "
                                  "its files; existing files are never replaced)")
        todo, clashes = [], []
        for source in self.files():
            destination = target / source.relative_to(self.folder)
            if not os.path.lexists(destination):
                todo.append((source, destination))
            elif not (destination.is_file() and not destination.is_symlink() and _same_bytes(source, destination)):
                clashes.append(str(destination.relative_to(target)))
        if clashes:
            raise FileExistsError(f"{target}: would replace {', '.join(clashes[:3])}"
                                  + (f" and {len(clashes) - 3} more" if len(clashes) > 3 else "")
                                  + " (existing files are never replaced)")
        for source, destination in todo:
            destination.parent.mkdir(parents=True, exist_ok=True)
            with open(source, "rb") as src, open(destination, "xb") as dst:  # "x": never replace a file
                try:
                    shutil.copyfileobj(src, dst)
                except BaseException:
                    destination.unlink(missing_ok=True)  # ours (created above): no half-written file left
                    raise
        return _dataset_at(self.name, target, self.license_line)


def _same_bytes(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            chunk = fa.read(1 << 20)
            if chunk != fb.read(1 << 20):
                return False
            if not chunk:
                return True


def _dataset_at(name: str, folder: Path, license_line: str) -> SampleDataset:
    images_dir, labels_dir = folder / "imagesTr", folder / "labelsTr"
    if not images_dir.is_dir() or not labels_dir.is_dir():
        raise FileNotFoundError(f"{folder}: sample data missing (no imagesTr/ or labelsTr/); "
                                "the package was installed without its data files")
    pairs = []
    for label in sorted(labels_dir.glob("*.nii.gz")):
        case = label.name[: -len(".nii.gz")]
        image = images_dir / f"{case}_0000.nii.gz"
        if not image.is_file():
            raise FileNotFoundError(f"{image}: missing (the label {label} has no image)")
        pairs.append((case, image, label))
    if not pairs:
        raise FileNotFoundError(f"{labels_dir}: no label maps (*.nii.gz)")
    meta = json.loads((folder / "dataset.json").read_text())
    labels = {int(value): str(key) for key, value in meta["labels"].items()}
    return SampleDataset(
        name=name,
        folder=folder,
        case_ids=tuple(case for case, _, _ in pairs),
        pairs=tuple((image, label) for _, image, label in pairs),
        labels=dict(sorted(labels.items())),
        license=(folder / "LICENSE").read_text(),
        license_line=license_line,
    )


def sample_lungs_ct() -> SampleDataset:
    """Six chest CTs of the Lung CT Segmentation Challenge 2017 with expert lung labels, shipped with pgl-zoo.

    Cases ``lung_000`` .. ``lung_005`` of the LCTSC set (TCIA, CC BY 3.0; attribution in
    ``LICENSE``), resampled to 3 mm isotropic (linear for the CT, nearest for the label) and
    cropped to the body in x/y and to the lungs plus 30 mm in z; about 12.5 MB in all. Images are
    int16 Hounsfield units; labels uint8, 0 background, 1 lungs (left and right together), on
    exactly the image's grid. SimpleITK sizes/spacings/origins are (x, y, z) in mm (spacing
    3.0, 3.0, 3.0), numpy arrays from ``sitk.GetArrayFromImage`` are (z, y, x). The folder is in
    nnU-Net layout with a ``dataset.json``, so ``pgl-zoo finetune --data FOLDER`` reads it as-is.
    ``scripts/make_sample_data.py`` in the repository regenerates the files from the source set.

    Returns a frozen :class:`SampleDataset`; files are read from the installed package and must
    not be modified there: use :meth:`SampleDataset.copy_to` for a writable copy.
    """
    return _dataset_at("lctsc_lungs", SAMPLE_ROOT / "lctsc_lungs", LCTSC_LICENSE_LINE)
