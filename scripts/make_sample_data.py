#!/usr/bin/env python
"""Regenerate pgl-zoo's sample data (pgl_zoo/sample_data/) from the source sets in ../shared/data.

Two sets, chosen with ``--set`` (default ``lctsc_lungs``, as before):

``--set lctsc_lungs`` (pgl_zoo/sample_data/lctsc_lungs).
Source: ``../shared/data/ct/lctsc_lungs`` (8 chest CTs of the Lung CT Segmentation Challenge 2017,
MSD layout ``imagesTr/lung_NNN.nii.gz`` + ``labelsTr/lung_NNN.nii.gz``, 1.5 x 1.5 x 3.0 mm, int16 HU,
both lungs as label 1). For each case in ``SAMPLE_CASES``:

1. resample to 3 mm isotropic with SimpleITK on a grid with the source's origin and direction
   (linear interpolation for the image, rounded to int16 HU; nearest neighbour for the label,
   uint8). The new grid's voxel centres all lie inside the source grid: size = floor((n - 1) *
   spacing / 3) + 1 along each axis, so nothing is extrapolated;
2. crop (clamped to the volume): in x and y to the bounding box of the body (the largest connected
   component of HU > -500, united with the lung label) plus ``MARGIN_XY_VOXELS`` (30 mm); in z to
   the slices holding lung label plus ``MARGIN_Z_VOXELS`` (30 mm) above and below. Cropping with
   ``sitk.RegionOfInterest`` moves the origin to the first kept voxel, so the geometry stays exact;
3. write uncompressed NIfTI with SimpleITK, then gzip it deterministically (Python's gzip at
   level 9, mtime 0, no file name in the header), as nnU-Net layout
   ``imagesTr/lung_NNN_0000.nii.gz`` and ``labelsTr/lung_NNN.nii.gz``, plus ``dataset.json``.

The same SimpleITK/zlib versions give byte-identical files; the uncompressed NIfTI bytes (header
and voxels) are what the tests compare. Cases not in ``SAMPLE_CASES`` (lung_006, lung_007) are left
out of the sample on purpose: they stay an independent check. ``README.md`` and ``LICENSE`` in the
output folder are hand-written and are not touched by this script.

``--set openkbp_hn`` (pgl_zoo/sample_data/openkbp_hn).
Source: ``../shared/data/ct/openkbp_hn`` (242 head-and-neck planning CTs of OpenKBP, nnU-Net layout
``imagesTr/hn_NNN.nii.gz`` + ``labelsTr/hn_NNN.nii.gz``, 128 x 128 x 128 voxels at 3.5-5.5 mm in-plane
and 2-3.5 mm slices, int16 HU, seven organs at risk 1..7, with ``dataset.json`` and ``structures.json``).
The volumes are already small, so nothing is resampled: for each case in ``HN_CASES`` (two of
OpenKBP's *test* patients, both with all seven organs contoured) the image and label files are
copied byte for byte to ``imagesTr/hn_NNN_0000.nii.gz`` and ``labelsTr/hn_NNN.nii.gz``; the script
writes ``dataset.json`` (the source's label names, the training list) and ``structures.json`` (the
source's entries for these cases, same shape, so ``--labelled-classes`` reads it). A case that is
not in OpenKBP's test split is refused: a model trained on OpenKBP's training and validation
patients must never have seen the sample. ``README.md`` and ``LICENSE`` are hand-written here too.

Usage (from the repository root)::

    python scripts/make_sample_data.py                       # all LCTSC sample cases, into the package
    python scripts/make_sample_data.py --out /tmp/s --cases lung_000
    python scripts/make_sample_data.py --set openkbp_hn      # the two OpenKBP cases, into the package
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from pgl_zoo.imaging import read_image

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO.parent / "shared" / "data" / "ct" / "lctsc_lungs"
DEFAULT_OUT = REPO / "pgl_zoo" / "sample_data" / "lctsc_lungs"

SAMPLE_CASES = ("lung_000", "lung_001", "lung_002", "lung_003", "lung_004", "lung_005")
HELD_OUT_CASES = ("lung_006", "lung_007")  # never shipped: an independent check
SPACING_MM = 3.0
BODY_HU = -500
MARGIN_XY_VOXELS = 10  # 30 mm of air around the body in x and y
MARGIN_Z_VOXELS = 10  # 30 mm above and below the lungs
GZIP_LEVEL = 9

HN_SOURCE = REPO.parent / "shared" / "data" / "ct" / "openkbp_hn"
HN_OUT = REPO / "pgl_zoo" / "sample_data" / "openkbp_hn"
HN_CASES = ("hn_247", "hn_286")  # OpenKBP test patients pt_247 and pt_286, all seven organs contoured
HN_SPLIT = "test-pats"  # the only OpenKBP split the sample may come from

DATASET_JSON = {
    "name": "pgl-zoo sample: LCTSC lungs at 3 mm",
    "description": (
        "Chest CTs of the Lung CT Segmentation Challenge 2017 (TCIA LCTSC) with expert lung contours "
        "(both lungs as label 1), resampled to 3 mm isotropic, cropped to the body (x, y) and to the lungs "
        "plus 30 mm (z). "
        "See README.md for how they were derived."
    ),
    "reference": "Yang J et al., Data from Lung CT Segmentation Challenge, TCIA 2017, "
                 "DOI 10.7937/K9/TCIA.2017.3r3fvz08",
    "licence": "CC BY 3.0",
    "channel_names": {"0": "CT"},
    "labels": {"background": 0, "lungs": 1},
    "file_ending": ".nii.gz",
    "tensorImageSize": "3D",
}


def resample_to_grid(image: sitk.Image, spacing_mm: float, interpolator: int, pixel_id: int) -> sitk.Image:
    """``image`` on an isotropic ``spacing_mm`` grid with the same origin and direction (no extrapolation)."""
    old_spacing = np.asarray(image.GetSpacing(), dtype=float)
    old_size = np.asarray(image.GetSize(), dtype=float)
    size = [int(n) for n in np.floor((old_size - 1) * old_spacing / spacing_mm + 1e-6) + 1]
    resampler = sitk.ResampleImageFilter()
    resampler.SetOutputSpacing([spacing_mm] * 3)
    resampler.SetSize(size)
    resampler.SetOutputOrigin(image.GetOrigin())
    resampler.SetOutputDirection(image.GetDirection())
    resampler.SetInterpolator(interpolator)
    resampler.SetDefaultPixelValue(0)
    resampler.SetOutputPixelType(pixel_id)
    return resampler.Execute(image)


def resample_case(image: sitk.Image, label: sitk.Image,
                  spacing_mm: float = SPACING_MM) -> tuple[sitk.Image, sitk.Image]:
    """Image (linear, rounded to int16 HU) and label (nearest, uint8) on the 3 mm grid."""
    linear = resample_to_grid(image, spacing_mm, sitk.sitkLinear, sitk.sitkFloat32)
    hu = np.round(sitk.GetArrayViewFromImage(linear)).astype(np.int16)
    out_image = sitk.GetImageFromArray(hu)
    out_image.CopyInformation(linear)
    out_label = resample_to_grid(sitk.Cast(label, sitk.sitkUInt8), spacing_mm, sitk.sitkNearestNeighbor,
                                 sitk.sitkUInt8)
    return out_image, out_label


def crop_box(image: sitk.Image, label: sitk.Image) -> tuple[list[int], list[int]]:
    """(index, size) in (x, y, z) of the crop: body box in x/y, lung extent in z, each with its margin."""
    body = sitk.RelabelComponent(sitk.ConnectedComponent(sitk.Cast(image > BODY_HU, sitk.sitkUInt8)),
                                 sortByObjectSize=True)
    mask = (sitk.GetArrayViewFromImage(body) == 1) | (sitk.GetArrayViewFromImage(label) > 0)  # (z, y, x)
    if not mask.any():
        raise ValueError("no body found (no voxel above -500 HU)")
    lungs = sitk.GetArrayViewFromImage(label) > 0
    if not lungs.any():
        raise ValueError("the label map is empty")
    size_xyz = image.GetSize()
    index, size = [0, 0, 0], list(size_xyz)
    for axis_xyz, axis_zyx, region, margin in ((0, 2, mask, MARGIN_XY_VOXELS), (1, 1, mask, MARGIN_XY_VOXELS),
                                               (2, 0, lungs, MARGIN_Z_VOXELS)):
        other = tuple(a for a in range(3) if a != axis_zyx)
        hits = np.flatnonzero(region.any(axis=other))
        low = max(0, int(hits[0]) - margin)
        high = min(size_xyz[axis_xyz] - 1, int(hits[-1]) + margin)
        index[axis_xyz], size[axis_xyz] = low, high - low + 1
    return index, size


def reduce_case(image: sitk.Image, label: sitk.Image) -> tuple[sitk.Image, sitk.Image]:
    """The whole derivation for one case: resample to 3 mm, then crop (geometry kept)."""
    image, label = resample_case(image, label)
    index, size = crop_box(image, label)
    return sitk.RegionOfInterest(image, size, index), sitk.RegionOfInterest(label, size, index)


def nifti_bytes(image: sitk.Image) -> bytes:
    """The uncompressed NIfTI-1 file SimpleITK writes for ``image``."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "volume.nii")
        sitk.WriteImage(image, path, useCompression=False)
        return Path(path).read_bytes()


def deterministic_gzip(data: bytes) -> bytes:
    """gzip with mtime 0 and no file name: the same input gives the same bytes (for one zlib)."""
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, compresslevel=GZIP_LEVEL, mtime=0) as stream:
        stream.write(data)
    return buffer.getvalue()


def write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def make_case(source: Path, name: str, out: Path) -> tuple[Path, Path]:
    """Derive one case from ``source`` into ``out`` (nnU-Net layout); returns (image, label) paths."""
    image = read_image(source / "imagesTr" / f"{name}.nii.gz")
    label = read_image(source / "labelsTr" / f"{name}.nii.gz")
    image, label = reduce_case(image, label)
    image_path = out / "imagesTr" / f"{name}_0000.nii.gz"
    label_path = out / "labelsTr" / f"{name}.nii.gz"
    write_bytes(image_path, deterministic_gzip(nifti_bytes(image)))
    write_bytes(label_path, deterministic_gzip(nifti_bytes(label)))
    return image_path, label_path


def dataset_json(cases: list[str], base: dict = DATASET_JSON, **fields) -> str:
    """``base`` (a set's dataset.json fields) with ``fields`` and the training list of ``cases``."""
    content = dict(base, **fields, numTraining=len(cases),
                   training=[{"image": f"./imagesTr/{c}_0000.nii.gz", "label": f"./labelsTr/{c}.nii.gz"}
                             for c in cases])
    return json.dumps(content, indent=2) + "\n"


HN_DATASET_JSON = {
    "name": "pgl-zoo sample: OpenKBP head-and-neck organs at risk",
    "description": (
        "Two head-and-neck radiotherapy planning CTs of OpenKBP's test split (pt_247, pt_286) with their seven "
        "organs at risk, copied unchanged from ../shared/data/ct/openkbp_hn (128 x 128 x 128 voxels, spacing per "
        "patient). Not every organ is contoured in every OpenKBP patient; these two have all seven "
        "(structures.json). See README.md."
    ),
    "reference": "Babier A, Zhang B, Mahmood R, et al., OpenKBP: The open-access knowledge-based planning grand "
                 "challenge and dataset, Med Phys 2021;48(9):5549-5561, DOI 10.1002/mp.14845; "
                 "ababier/open-kbp (MIT); CTs from TCIA head-and-neck collections",
    "licence": "research use; OpenKBP repository MIT; the TCIA collections' own licences were not verified "
               "(see LICENSE)",
    "channel_names": {"0": "CT"},
    "labels": {},  # the source's, filled in by make_hn
    "file_ending": ".nii.gz",
    "tensorImageSize": "3D",
}
HN_LABELS = {"background": 0, "Brainstem": 1, "SpinalCord": 2, "RightParotid": 3, "LeftParotid": 4,
             "Esophagus": 5, "Larynx": 6, "Mandible": 7}


def hn_source_meta(source: Path) -> tuple[dict, dict]:
    """The source's ``dataset.json`` labels (name -> value) and its ``structures.json`` (case -> entry)."""
    labels = json.loads((source / "dataset.json").read_text())["labels"]
    if labels != HN_LABELS:
        raise ValueError(f"{source / 'dataset.json'}: labels {labels} differ from the expected {HN_LABELS}")
    structures = json.loads((source / "structures.json").read_text())
    return labels, structures


def hn_check_cases(structures: dict, cases: list[str]) -> None:
    """Refuse a case that is not one of OpenKBP's test patients (or is not in the source at all)."""
    for case in cases:
        if case not in structures:
            raise ValueError(f"{case}: not in the source's structures.json")
        if structures[case]["openkbp_split"] != HN_SPLIT:
            raise ValueError(f"{case}: OpenKBP split {structures[case]['openkbp_split']!r}, not {HN_SPLIT!r} (a "
                             "model trained on OpenKBP's training/validation patients may have seen it)")


def hn_structures_json(structures: dict, cases: list[str]) -> str:
    """The source's entries for ``cases``, unchanged, in the source's layout (indent 1)."""
    return json.dumps({case: structures[case] for case in cases}, indent=1) + "\n"


def copy_hn_case(source: Path, name: str, out: Path) -> tuple[Path, Path]:
    """Copy one OpenKBP case byte for byte into ``out`` (nnU-Net names); returns (image, label) paths."""
    image_path = out / "imagesTr" / f"{name}_0000.nii.gz"
    label_path = out / "labelsTr" / f"{name}.nii.gz"
    write_bytes(image_path, (source / "imagesTr" / f"{name}.nii.gz").read_bytes())  # under 0.5 MB each
    write_bytes(label_path, (source / "labelsTr" / f"{name}.nii.gz").read_bytes())
    return image_path, label_path


def make_hn(source: Path, out: Path, cases: list[str]) -> list[tuple[Path, Path]]:
    """The whole OpenKBP sample: the cases' files, ``dataset.json`` and ``structures.json``."""
    labels, structures = hn_source_meta(source)
    cases = sorted(cases)
    hn_check_cases(structures, cases)
    pairs = [copy_hn_case(source, name, out) for name in cases]
    write_bytes(out / "dataset.json", dataset_json(cases, HN_DATASET_JSON, labels=labels).encode())
    write_bytes(out / "structures.json", hn_structures_json(structures, cases).encode())
    return pairs


SETS = {"lctsc_lungs": (DEFAULT_SOURCE, DEFAULT_OUT, SAMPLE_CASES),
        "openkbp_hn": (HN_SOURCE, HN_OUT, HN_CASES)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", dest="sample_set", choices=sorted(SETS), default="lctsc_lungs",
                        help="which sample set to make (default: lctsc_lungs)")
    parser.add_argument("--source", type=Path, help="source folder (imagesTr, labelsTr; default: the set's "
                                                    "folder under ../shared/data/ct)")
    parser.add_argument("--out", type=Path, help="output folder (default: the set's folder in the package)")
    parser.add_argument("--cases", nargs="+", help="case ids (default: the set's sample cases)")
    args = parser.parse_args(argv)
    default_source, default_out, default_cases = SETS[args.sample_set]
    args.source = args.source or default_source
    args.out = args.out or default_out
    args.cases = args.cases or list(default_cases)
    if not (args.source / "imagesTr").is_dir():
        parser.error(f"{args.source}: no imagesTr/ folder (the {args.sample_set} source data is needed)")
    if args.sample_set == "openkbp_hn":
        try:
            pairs = make_hn(args.source, args.out, args.cases)
        except ValueError as exc:
            parser.error(str(exc))
        total = sum(p.stat().st_size for pair in pairs for p in pair)
        for image_path, _ in pairs:
            image = read_image(image_path)
            print(f"{image_path.name}: {image.GetSize()} voxels (x, y, z) @ "
                  f"{tuple(round(s, 3) for s in image.GetSpacing())} mm, copied unchanged")
        print(f"{len(pairs)} cases, {total / 1e6:.2f} MB of volumes -> {args.out}")
        return
    total = 0
    for name in args.cases:
        paths = make_case(args.source, name, args.out)
        sizes = [p.stat().st_size for p in paths]
        total += sum(sizes)
        print(f"{name}: {read_image(paths[0]).GetSize()} voxels (x, y, z) @ {SPACING_MM} mm, "
              f"{sizes[0] / 1e6:.2f} MB + {sizes[1] / 1e6:.3f} MB")
    write_bytes(args.out / "dataset.json", dataset_json(sorted(args.cases)).encode())
    print(f"{len(args.cases)} cases, {total / 1e6:.2f} MB of volumes -> {args.out}")


if __name__ == "__main__":
    main()
