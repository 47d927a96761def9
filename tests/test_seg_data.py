"""Labelled data sets: MSD, nnU-Net and CSV layouts, label names, geometry and label checks, patches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from pgl_zoo.cards import Preprocessing
from pgl_zoo.errors import DataError
from pgl_zoo.finetune.data import CaseArrays, find_cases, load_case, read_label_names, sample_patch


def _volume(path: Path, array: np.ndarray, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0)) -> Path:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return path


def _labelled(root: Path, name: str, image_name: str | None = None, label_value: int = 1, **geometry) -> None:
    rng = np.random.default_rng(0)
    _volume(root / "imagesTr" / (image_name or f"{name}.nii.gz"), rng.normal(size=(8, 9, 10)).astype(np.float32))
    label = np.zeros((8, 9, 10), np.uint8)
    label[2:5, 3:6, 4:7] = label_value
    _volume(root / "labelsTr" / f"{name}.nii.gz", label, **geometry)


def test_msd_layout_and_label_names(tmp_path):
    for name in ("b_002", "a_001"):
        _labelled(tmp_path, name)
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"0": "background", "1": "anterior"}}))
    pairs = find_cases(tmp_path)
    assert [p.name for p in pairs] == ["a_001", "b_002"]
    assert pairs[0].image == tmp_path / "imagesTr" / "a_001.nii.gz"
    assert read_label_names(tmp_path) == {"0": "background", "1": "anterior"}


def test_nnunet_layout_channel_suffix_and_v2_label_names(tmp_path):
    _labelled(tmp_path, "case_7", image_name="case_7_0000.nii.gz")
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "tumour": 1}}))
    [pair] = find_cases(tmp_path)
    assert pair.name == "case_7" and pair.image.name == "case_7_0000.nii.gz"
    assert read_label_names(tmp_path) == {"0": "background", "1": "tumour"}


def test_csv_of_pairs(tmp_path):
    _labelled(tmp_path, "x_1")
    csv = tmp_path / "pairs.csv"
    csv.write_text("image,label\nimagesTr/x_1.nii.gz,labelsTr/x_1.nii.gz\n")
    [pair] = find_cases(csv)
    assert pair.label == tmp_path / "labelsTr" / "x_1.nii.gz"


def test_empty_folder_and_unlabelled_image_are_errors(tmp_path):
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    with pytest.raises(DataError, match="no labelled cases"):
        find_cases(tmp_path)
    _volume(tmp_path / "imagesTr" / "lonely.nii.gz", np.zeros((4, 4, 4), np.float32))
    with pytest.raises(DataError, match="no label .* for lonely.nii.gz"):
        find_cases(tmp_path)


def test_geometry_mismatch_names_both_files(tmp_path):
    _labelled(tmp_path, "c", origin=(0.0, 0.0, 5.0))
    [pair] = find_cases(tmp_path)
    expected = r"labelsTr/c.nii.gz does not match the geometry of .*imagesTr/c.nii.gz.*origin"
    with pytest.raises(DataError, match=expected):
        load_case(pair, Preprocessing(), num_classes=2)


def test_label_value_out_of_range_names_file_and_value(tmp_path):
    _labelled(tmp_path, "d", label_value=4)
    [pair] = find_cases(tmp_path)
    with pytest.raises(DataError, match=r"d.nii.gz: label value 4 outside 0..2"):
        load_case(pair, Preprocessing(), num_classes=3)


def test_load_case_resamples_labels_by_nearest_neighbour(tmp_path):
    _labelled(tmp_path, "e", label_value=2)
    [pair] = find_cases(tmp_path)
    case = load_case(pair, Preprocessing(spacing_xyz_mm=(0.5, 0.5, 0.5)), num_classes=3)
    assert case.image.shape == case.label.shape == (16, 18, 20)
    assert set(np.unique(case.label)) == {0, 2}
    assert abs(float(case.image.mean())) < 1e-4  # z-scored


def test_foreground_patches_contain_labels_and_small_volumes_are_padded():
    label = np.zeros((10, 12, 14), np.int64)
    label[8, 1, 12] = 1
    case = CaseArrays("c", np.ones((10, 12, 14), np.float32), label)
    rng = np.random.default_rng(0)
    for _ in range(20):
        image, patch = sample_patch(case, (6, 6, 6), rng, foreground_probability=1.0)
        assert image.shape == patch.shape == (6, 6, 6) and patch.sum() == 1
    image, patch = sample_patch(case, (16, 16, 16), rng)
    assert image.shape == (16, 16, 16)


def test_foreground_patches_draw_the_class_first_so_a_small_organ_is_seen_as_often_as_a_large_one():
    label = np.zeros((20, 20, 20), np.int64)
    label[:, :10, :] = 1  # a large organ: 4,000 voxels
    label[15, 15, 15] = 2  # a one-voxel organ
    case = CaseArrays("c", np.zeros((20, 20, 20), np.float32), label)
    assert {c: v.size for c, v in case.foreground.items()} == {1: 4000, 2: 1}
    assert np.array_equal(case.foreground[1], np.flatnonzero(label == 1))
    rng = np.random.default_rng(0)
    hits = sum(int((sample_patch(case, (2, 2, 2), rng, foreground_probability=1.0)[1] == 2).any())
               for _ in range(400))
    assert 150 < hits < 250  # about half; a voxel drawn over all foreground would hit it 1 time in 4,001
