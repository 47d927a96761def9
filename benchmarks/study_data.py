"""The transfer study's data, read once from ``../shared/data`` and stored as arrays.

``python benchmarks/study_data.py --out study_data/`` reads every scan with SimpleITK through the
package's own preprocessing (``pgl_zoo.preprocessing``: reorientation to LPS and linear resampling to the
study's spacing) and writes two compressed archives, so that the study itself runs anywhere torch
runs (a GPU machine without SimpleITK included), with the data in memory:

* ``ct.npz``: the LCTSC chest CTs (``../shared/data/ct/lctsc_lungs``, 8 cases, expert lung labels)
  at ``CT_SPACING_XYZ_MM``, as int16 HU (rounded after resampling: at most 0.5 HU from the package's
  float pipeline) with uint8 labels (nearest neighbour), and the pretraining pool: every real-HU CT
  volume under ``../shared/data/ct`` found by ``pgl_zoo.pretrain.data.prepare_volumes`` (label maps
  and non-HU scans are skipped by its checks), minus the study's LCTSC test cases.
* ``mri.npz``: the MSD hippocampus T1 MRI (``../shared/data/mri/hippocampus``) at native spacing,
  uint8 as stored, with labels.
* ``manifest.json``: sources, split, spacing and counts (the study's records quote it).

Intensity normalisation (window and z-score) is *not* applied here: the study applies the package's
``normalize_intensities`` when it loads the arrays (:func:`load_study_data`). Axis order (z, y, x).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np

# $PGL_ZOO_DATA (as the tests and the other benchmarks read it), else ../shared/data beside the checkout.
SHARED = Path(os.environ.get("PGL_ZOO_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
CT_SPACING_XYZ_MM = (4.0, 4.0, 4.0)
CT_WINDOW_HU = (-1024.0, 325.0)
SPLIT_SEED = 2020
CT_TEST_CASES = ("lung_005", "lung_006", "lung_007")  # the sample data ships lung_000..005; see README
MRI_TEST_COUNT = 30


def mri_split(names: list[str], test_count: int = MRI_TEST_COUNT) -> tuple[list[str], list[str]]:
    """(test, train) of the hippocampus case names: ``test_count`` test cases drawn with ``SPLIT_SEED``
    (sorted); the rest in the drawn order (labelled subsets are drawn from it). The one home of this split:
    the study, the task model and its test use it."""
    names = sorted(names)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(names))
    return sorted(names[i] for i in order[:test_count]), [names[i] for i in order[test_count:]]


def _ct_targets(root: Path, spacing) -> tuple[dict, dict]:
    import SimpleITK as sitk

    from pgl_zoo.imaging.read import read_image
    from pgl_zoo.preprocessing.grid import reorient, resample_to_spacing

    images, labels = {}, {}
    for path in sorted((root / "imagesTr").glob("*.nii.gz")):
        name = path.name[: -len(".nii.gz")]
        image = resample_to_spacing(reorient(sitk.Cast(read_image(path), sitk.sitkFloat32), "LPS"), spacing,
                                    sitk.sitkLinear)
        label = sitk.Resample(reorient(read_image(root / "labelsTr" / path.name), "LPS"), image, sitk.Transform(),
                              sitk.sitkNearestNeighbor, 0)
        images[name] = np.round(sitk.GetArrayFromImage(image)).astype(np.int16)
        labels[name] = sitk.GetArrayFromImage(label).astype(np.uint8)
    return images, labels


def _ct_pool(ct_root: Path | list[str], spacing, exclude: set[str], cache: Path) -> tuple[dict, list[list[str]]]:
    from pgl_zoo.cards import Preprocessing
    from pgl_zoo.pretrain.data import prepare_volumes

    prep = Preprocessing(spacing_xyz_mm=spacing, orientation="LPS", window=None, normalization="none")
    roots = ct_root if isinstance(ct_root, list) else str(ct_root)
    data = prepare_volumes(roots, prep, "CT", non_hu="skip", cache_dir=cache, warn=lambda m: None)
    pool = {}
    for v in data.volumes:
        if any(f"/{name}.nii.gz" in v.source for name in exclude):
            continue
        pool[v.source] = np.round(v.load_normalized()).clip(-32768, 32767).astype(np.int16)  # HU (map: none)
    return pool, [list(s) for s in data.skipped]


def _mri(root: Path, limit: int | None = None) -> tuple[dict, dict]:
    import SimpleITK as sitk

    from pgl_zoo.imaging.read import read_image
    from pgl_zoo.preprocessing.grid import reorient

    images, labels = {}, {}
    for path in [p for p in sorted((root / "imagesTr").glob("*.nii.gz")) if not p.name.startswith(".")][:limit]:
        name = path.name[: -len(".nii.gz")]
        images[name] = sitk.GetArrayFromImage(reorient(read_image(path), "LPS"))
        labels[name] = sitk.GetArrayFromImage(reorient(read_image(root / "labelsTr" / path.name), "LPS")).astype(
            np.uint8)
    return images, labels


def prepare(out: Path, shared: Path = SHARED, small: bool = False) -> dict:
    """Write the archives and the manifest; ``small`` (for tests): the CT pool is the LCTSC training
    images only and the MRI set its first 40 cases (the split is then drawn over those)."""
    out.mkdir(parents=True, exist_ok=True)
    ct_images, ct_labels = _ct_targets(shared / "ct" / "lctsc_lungs", CT_SPACING_XYZ_MM)
    pool_root = [str(shared / "ct" / "lctsc_lungs" / "imagesTr")] if small else shared / "ct"
    with tempfile.TemporaryDirectory() as cache:  # the pretraining cache of float32 arrays is not kept
        pool, skipped = _ct_pool(pool_root, CT_SPACING_XYZ_MM, set(CT_TEST_CASES), Path(cache))
    arrays = {f"target_image/{k}": v for k, v in ct_images.items()}
    arrays |= {f"target_label/{k}": v for k, v in ct_labels.items()}
    arrays |= {f"pool/{i:03d}": v for i, v in enumerate(pool.values())}
    np.savez_compressed(out / "ct.npz", **arrays)
    mri_images, mri_labels = _mri(shared / "mri" / "hippocampus", 40 if small else None)
    mri_test, mri_train = mri_split(list(mri_images), 10 if small else MRI_TEST_COUNT)
    arrays = {f"target_image/{k}": v for k, v in mri_images.items()}
    arrays |= {f"target_label/{k}": v for k, v in mri_labels.items()}
    np.savez_compressed(out / "mri.npz", **arrays)
    ct_train = [n for n in sorted(ct_images) if n not in CT_TEST_CASES]
    manifest = {
        "ct": {"target": "../shared/data/ct/lctsc_lungs", "spacing_xyz_mm": CT_SPACING_XYZ_MM, "window": CT_WINDOW_HU,
               "normalization": "zscore", "test": list(CT_TEST_CASES), "train": ct_train,
               "pool_sources": list(pool), "pool_skipped": skipped, "label_names": {"1": "lungs"}},
        "mri": {"target": "../shared/data/mri/hippocampus", "spacing_xyz_mm": None, "window": None,
                "normalization": "zscore", "test": mri_test, "train": mri_train, "split_seed": SPLIT_SEED,
                "pool_sources": [f"hippocampus/{n}" for n in mri_train],
                "label_names": {"1": "anterior", "2": "posterior"}},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def load_study_data(folder: Path, modality: str) -> dict:
    """``{"train": {name: (image, label)}, "test": {...}, "pool": [image, ...], "manifest": {...}}`` with
    images float32 (z, y, x) windowed and z-scored by ``pgl_zoo.preprocessing.intensity.normalize_intensities``,
    labels int64.
    The pretraining pool of MRI is the training split's images; of CT, the archive's pool."""
    from pgl_zoo.preprocessing.intensity import normalize_intensities

    key = {"CT": "ct", "MRI": "mri"}[modality]
    manifest = json.loads((folder / "manifest.json").read_text())[key]
    window = tuple(manifest["window"]) if manifest["window"] else None

    def norm(a: np.ndarray) -> np.ndarray:
        return normalize_intensities(a.astype(np.float32), window, manifest["normalization"], inplace=True)

    with np.load(folder / f"{key}.npz") as z:
        pairs = {n: (norm(z[f"target_image/{n}"]), z[f"target_label/{n}"].astype(np.int64))
                 for n in manifest["train"] + manifest["test"]}
        pool = [norm(z[k]) for k in sorted(z.files) if k.startswith("pool/")]
    if key == "mri":
        pool = [pairs[n][0] for n in manifest["train"]]
    return {"train": {n: pairs[n] for n in manifest["train"]}, "test": {n: pairs[n] for n in manifest["test"]},
            "pool": pool, "manifest": manifest}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("study_data"))
    parser.add_argument("--shared", type=Path, default=SHARED)
    parser.add_argument("--small", action="store_true", help="a small subset (tests)")
    args = parser.parse_args()
    manifest = prepare(args.out, args.shared, args.small)
    print(json.dumps({k: {"train": len(v["train"]), "test": len(v["test"]), "pool": len(v["pool_sources"])}
                      for k, v in manifest.items()}))
    for f in sorted(args.out.glob("*.npz")):
        print(f, f"{f.stat().st_size / 1e6:.1f} MB")
