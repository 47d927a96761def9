"""Pretraining data from a raw folder: real CT scans are found and preprocessed; label maps, non-HU
CT (per policy), corrupt, 2D, NaN and constant files are skipped with one warning each; the cache
makes a second run instant; the sample stream does not depend on the number of workers."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from _seg_helpers import DATA_DIR

from pgl_zoo.errors import DataError
from pgl_zoo.pretrain.data import content_key, prepare_volumes
from pgl_zoo.pretrain.dataset import StepSampler, ViewPairDataset, make_loader
from pgl_zoo.registry import get_card

DATA = DATA_DIR
PREP = get_card("pgl-ct-tiny").preprocessing


@pytest.fixture(scope="module")
def ct_dir() -> Path:
    if not (DATA / "ct").is_dir():
        pytest.skip(f"real data folder {DATA / 'ct'} is absent (it sits beside the checkout in CI)")
    return DATA / "ct"


def _mixed_ct_roots(ct_dir: Path) -> list[Path]:
    """Every folder of ../shared/data/ct, with OpenKBP's 242 scans and 242 label maps cut to two of each (the
    whole set would only repeat the same two kinds of file at the cost of minutes)."""
    roots = [p for p in sorted(ct_dir.iterdir()) if p.name != "openkbp_hn"]
    openkbp = ct_dir / "openkbp_hn"
    if openkbp.is_dir():
        roots += sorted((openkbp / "imagesTr").glob("*.nii.gz"))[:2]
        roots += sorted((openkbp / "labelsTr").glob("*.nii.gz"))[:2]
    return roots


def test_real_ct_folder_skip_policy_and_cache(ct_dir, tmp_path):
    warnings: list[str] = []
    roots = _mixed_ct_roots(ct_dir)
    first = prepare_volumes(roots, PREP, "CT", "skip", tmp_path, warn=warnings.append)
    sources = [v.source for v in first.volumes]
    assert any("example_ct.nii.gz" in s for s in sources) and any("chest_dicom_series" in s for s in sources)
    assert not any("not_hu" in s or "_seg" in s or "SEG" in s for s in sources)
    skipped = dict(first.skipped)
    assert sum("label map" in r for r in skipped.values()) >= 5  # 4 NRRD masks, DICOM-SEG, TotalSeg labels
    # OpenKBP's organ masks (small organs at ~4.5 mm: thin, so few equal neighbours) are label maps too
    assert all("label map" in r for k, r in skipped.items() if "openkbp_hn/labelsTr" in k)
    assert sum("openkbp_hn/imagesTr" in s for s in sources) == (2 if (ct_dir / "openkbp_hn").is_dir() else 0)
    assert sum("not in HU" in r for r in skipped.values()) == 3
    assert any("tiny_dicom" in k and "non-uniform slice spacing" in r for k, r in skipped.items())
    assert any("liver_3slice_dicom/dicom" in s for s in sources)  # a 3-slice series is kept (padded later)
    assert len(warnings) == len(first.skipped)  # one line per skipped volume
    for v in first.volumes:
        array = v.load()
        assert array.dtype == np.int16 and array.ndim == 3  # compact: HU within the window (cache.py)
        assert PREP.window[0] <= array.min() and array.max() <= PREP.window[1]
        assert tuple(array.shape) == v.shape_zyx
    start = time.perf_counter()
    second = prepare_volumes(roots, PREP, "CT", "skip", tmp_path, warn=lambda m: None)
    assert time.perf_counter() - start < 5.0
    assert second.cache_hits == len(first.volumes) + len(first.skipped)
    assert [v.source for v in second.volumes] == sources


def test_non_hu_rescale_policy(ct_dir, tmp_path):
    warnings: list[str] = []
    data = prepare_volumes(ct_dir / "not_hu", PREP, "CT", "rescale", tmp_path, warn=warnings.append)
    assert len(data.volumes) == 3 and all("rescaled" in v.note for v in data.volumes)
    assert len(warnings) == 3 and all("not in HU" in w for w in warnings)
    with pytest.raises(DataError, match="no usable volume"):
        prepare_volumes(ct_dir / "not_hu", PREP, "CT", "skip", tmp_path, warn=lambda m: None)


def _write(path: Path, array: np.ndarray, spacing=(2.0, 2.0, 2.0)) -> Path:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))
    return path


def test_degenerate_files_are_skipped_one_line_each(tmp_path):
    rng = np.random.default_rng(0)
    good = (rng.normal(0, 300, size=(12, 20, 20)) - 200).astype(np.int16)
    _write(tmp_path / "good.nii.gz", good)
    nan = rng.normal(size=(8, 8, 8)).astype(np.float32) - 1000
    nan[2, 2, 2] = np.nan
    _write(tmp_path / "nan.nrrd", nan)
    _write(tmp_path / "flat.mha", np.zeros((5, 6, 7), np.int16) - 1000)
    _write(tmp_path / "slice2d.nii.gz", good[:1])
    (tmp_path / "corrupt.nii.gz").write_bytes(b"\x1f\x8b not really a gzip file")
    (tmp_path / "sub").mkdir()
    zz, yy, xx = np.mgrid[:12, :20, :20]
    blob = ((zz - 6) ** 2 + (yy - 10) ** 2 + (xx - 10) ** 2 < 30).astype(np.uint8)
    _write(tmp_path / "sub" / "mask.nii.gz", blob + (xx > 14).astype(np.uint8) * 2)  # a 3-label mask
    warnings: list[str] = []
    data = prepare_volumes(tmp_path, PREP, "CT", "skip", tmp_path / "cache", warn=warnings.append)
    assert [Path(v.source).name for v in data.volumes] == ["good.nii.gz"]
    reasons = {Path(s).name: r for s, r in data.skipped}
    assert set(reasons) == {"nan.nrrd", "flat.mha", "slice2d.nii.gz", "corrupt.nii.gz", "mask.nii.gz"}
    assert "NaN" in reasons["nan.nrrd"] and "constant" in reasons["flat.mha"]
    assert "label map" in reasons["mask.nii.gz"]
    assert len(warnings) == 5 and all("\n" not in w for w in warnings)
    with pytest.raises(DataError, match="no usable volume"):
        prepare_volumes(tmp_path / "sub", PREP, "CT", "skip", tmp_path / "cache", warn=lambda m: None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no volumes found"):
        prepare_volumes(tmp_path / "empty", PREP, "CT", "skip", tmp_path / "cache")


def test_cache_key_follows_content_and_parameters(tmp_path):
    from pgl_zoo.imaging.discover import VolumeRef

    path = _write(tmp_path / "a.nii.gz", np.arange(512, dtype=np.int16).reshape(8, 8, 8) - 1000)
    ref = VolumeRef(path)
    k1 = content_key(ref, {"spacing": [2, 2, 2]})
    assert k1 == content_key(ref, {"spacing": [2, 2, 2]})
    assert k1 != content_key(ref, {"spacing": [1, 1, 1]})
    _write(path, np.arange(512, dtype=np.int16).reshape(8, 8, 8) - 999)
    assert k1 != content_key(ref, {"spacing": [2, 2, 2]})


def test_stream_is_independent_of_workers_and_sharded(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(3):
        _write(tmp_path / f"v{i}.nii.gz", (rng.normal(0, 300, size=(12, 24, 24)) - 300).astype(np.int16))
    data = prepare_volumes(tmp_path, PREP, "CT", "skip", tmp_path / "cache")
    dataset = ViewPairDataset(data.volumes, (8, 16, 16), seed=3)

    def batches(workers, rank=0, world=1):
        loader = make_loader(dataset, StepSampler(1, 3, 2, rank, world), workers)
        return [b for b in loader]

    serial, parallel = batches(0), batches(2)
    assert len(serial) == 2
    for s, p in zip(serial, parallel, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(s, p, strict=True))
    r0, r1 = batches(0, 0, 2), batches(0, 1, 2)
    assert not torch.equal(r0[0][0], r1[0][0])
    assert list(StepSampler(1, 3, 2, 1, 2)) == [6, 7, 10, 11]


def test_label_detection_keeps_8bit_mri_and_skips_its_labels(tmp_path):
    """8-bit MRI with ~110 grey values is an image (noisy), its 3-class masks are label maps."""
    mri = DATA / "mri" / "hippocampus"
    if not mri.is_dir():
        pytest.skip(f"real data folder {mri} is absent (it sits beside the checkout in CI)")
    from pgl_zoo.cards import Preprocessing

    images = ["hippocampus_001", "hippocampus_044", "hippocampus_064"]  # 124, 133, 128 distinct values
    files = [str(mri / "imagesTr" / f"{n}.nii.gz") for n in images]
    files += [str(mri / "labelsTr" / f"{n}.nii.gz") for n in images]
    data = prepare_volumes(files, Preprocessing(), "MRI", "keep", tmp_path, warn=lambda m: None)
    assert sorted(Path(v.source).parent.name for v in data.volumes) == ["imagesTr"] * 3
    assert [Path(s).parent.name for s, _ in data.skipped] == ["labelsTr"] * 3
    assert all("label map" in r for _, r in data.skipped)
