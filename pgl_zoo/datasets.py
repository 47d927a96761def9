"""Sample data shipped inside pgl-zoo, in the style of ``skimage.data``: real scans, no download.

Two sets: :func:`sample_lungs_ct` (six LCTSC chest CTs, lung label) and :func:`sample_hn_ct` (two
OpenKBP head-and-neck CTs, seven organs at risk). Example::

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

__all__ = ["SampleDataset", "sample_lungs_ct", "sample_hn_ct", "SAMPLE_SETS", "SAMPLE_ROOT"]

SAMPLE_ROOT = Path(str(resources.files("pgl_zoo").joinpath("sample_data")))
"""The folder that holds the package's sample data sets (inside the installed package)."""

LCTSC_LICENSE_LINE = (
    "LCTSC (TCIA), CC BY 3.0: Yang J, Sharp G, Veeraraghavan H, et al., Data from Lung CT Segmentation "
    "Challenge, The Cancer Imaging Archive, 2017, DOI 10.7937/K9/TCIA.2017.3r3fvz08; "
    "resampled to 3 mm and cropped by pgl-zoo"
)
OPENKBP_LICENSE_LINE = (
    "OpenKBP (ababier/open-kbp, MIT; CTs from TCIA head-and-neck collections, their licences not verified): "
    "research use; cite Babier A, Zhang B, Mahmood R, et al., OpenKBP: The open-access knowledge-based "
    "planning grand challenge and dataset, Med Phys 2021;48(9):5549-5561, DOI 10.1002/mp.14845; "
    "copied unchanged by pgl-zoo"
)


@dataclass(frozen=True)
class SampleDataset:
    """A labelled sample data set on disk, in nnU-Net layout (``imagesTr/NAME_0000.nii.gz``, ``labelsTr/NAME.nii.gz``).

    Attributes:
        name: the data set's short name (``lctsc_lungs``, ``openkbp_hn``).
        folder: the folder holding ``imagesTr/``, ``labelsTr/``, ``dataset.json``, ``README.md`` and ``LICENSE``
            (and ``structures.json``, the classes contoured per case, for a set from partially contoured data;
            see :attr:`labelled_classes_file`).
        case_ids: the case names, sorted (``lung_000``, ..., or ``hn_247``, ``hn_286``).
        pairs: ``(image, label)`` paths per case, in the order of ``case_ids``. Images are CT in
            Hounsfield units (int16), labels uint8 with 0 background and the values of ``labels``, on the
            image's exact grid. The spacing is the set's (its function's docstring says which).
        labels: label value -> name.
        license: the full text of the data's ``LICENSE`` file.
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
        """The label files (uint8, values as in ``labels``), in the order of ``case_ids``."""
        return tuple(label for _, label in self.pairs)

    @property
    def labelled_classes_file(self) -> Path | None:
        """``structures.json`` (case -> contoured organs), for ``--labelled-classes``; None for a fully labelled set."""
        path = self.folder / "structures.json"
        return path if path.is_file() else None

    def files(self) -> list[Path]:
        """Every file of the data set (volumes, ``dataset.json``, ``README.md``, ``LICENSE``, ...), sorted."""
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


def sample_hn_ct() -> SampleDataset:
    """Two head-and-neck planning CTs of OpenKBP's test split with seven organs at risk, shipped with pgl-zoo.

    OpenKBP patients ``pt_247`` and ``pt_286`` (cases ``hn_247``, ``hn_286``): *test* patients of
    OpenKBP's split, so a model trained on its training and validation patients never saw them.
    Copied unchanged from ``../shared/data/ct/openkbp_hn`` (no resampling); about 0.7 MB in all.
    Images are int16 Hounsfield units (-1024 outside the body region OpenKBP stored), 128 x 128 x
    128 voxels; the spacing varies per patient (4.688 x 4.688 x 3.0 mm and 5.078 x 5.078 x 2.5 mm;
    read it from the header). Labels are uint8 on exactly the image's grid: 0 background,
    1 Brainstem, 2 SpinalCord, 3 RightParotid, 4 LeftParotid, 5 Esophagus, 6 Larynx, 7 Mandible.
    SimpleITK sizes/spacings/origins are (x, y, z) in mm, numpy arrays from
    ``sitk.GetArrayFromImage`` are (z, y, x). Not every organ is contoured in every OpenKBP
    patient (these two have all seven): ``structures.json`` (:attr:`SampleDataset.labelled_classes_file`)
    lists each case's contoured organs for ``--labelled-classes``, so that an organ nobody drew is
    treated as unknown, not background. nnU-Net layout with a ``dataset.json``.
    ``scripts/make_sample_data.py --set openkbp_hn`` in the repository regenerates the files.

    License: research use; OpenKBP's repository is MIT, the CTs come from TCIA head-and-neck
    collections whose licences were not verified; cite Babier et al., Med Phys 2021;48(9):5549-5561
    (``LICENSE`` in the folder, ``license_line``).

    Returns a frozen :class:`SampleDataset`; files are read from the installed package and must
    not be modified there: use :meth:`SampleDataset.copy_to` for a writable copy.
    """
    return _dataset_at("openkbp_hn", SAMPLE_ROOT / "openkbp_hn", OPENKBP_LICENSE_LINE)


SAMPLE_SETS = {"lctsc_lungs": sample_lungs_ct, "openkbp_hn": sample_hn_ct}
"""Sample set name -> the function that returns it (the names ``pgl-zoo sample-data --set`` takes)."""
