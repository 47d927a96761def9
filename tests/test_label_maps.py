"""The one check of a label map's values (fine-tuning and evaluate), and a card's preprocessing overrides."""

from __future__ import annotations

import numpy as np
import pytest

from pgl_zoo.cards import NATIVE, NO_WINDOW, Preprocessing
from pgl_zoo.errors import DataError, PglZooError
from pgl_zoo.label_maps import MAX_INFERRED_CLASSES, check_label_values


@pytest.mark.parametrize("value, dtype, num_classes, fragment", [
    (-1, np.int16, 3, "lab.nii.gz: negative label value -1"),
    (0.5, np.float32, 3, "lab.nii.gz: fractional label value 0.5"),
    (3, np.uint8, 3, "lab.nii.gz: label value 3 outside 0..2: not below --num-classes 3"),
    (MAX_INFERRED_CLASSES, np.int32, None, "pass --num-classes"),
])
def test_impossible_label_values_are_refused_naming_file_and_value(value, dtype, num_classes, fragment):
    label = np.zeros((4, 4, 4), dtype)
    label[1, 2, 3] = value
    with pytest.raises(DataError) as error:
        check_label_values(label, "lab.nii.gz", num_classes)
    assert fragment in str(error.value)


@pytest.mark.parametrize("dtype", [np.uint8, np.int64, np.float32])
def test_labels_0_to_k_minus_1_pass(dtype):
    label = np.arange(64).reshape(4, 4, 4).astype(dtype) % 3
    check_label_values(label, "lab.nii.gz", 3)
    check_label_values(label, "lab.nii.gz", None)
    check_label_values(np.zeros((0, 4, 4), dtype), "empty.nii.gz", 1)


def test_preprocessing_overrides_keep_replace_or_drop_each_field():
    card = Preprocessing(spacing_xyz_mm=(4, 4, 4), window=(-1024, 325), normalization="zscore")
    assert card.with_overrides() == card
    assert card.with_overrides((1, 2, 3), (-100, 100), "minmax") == Preprocessing(
        spacing_xyz_mm=(1.0, 2.0, 3.0), window=(-100.0, 100.0), normalization="minmax")
    native = card.with_overrides(NATIVE, NO_WINDOW)
    assert (native.spacing_xyz_mm, native.window, native.normalization) == (None, None, "zscore")
    with pytest.raises(PglZooError, match="invalid preprocessing: .*minmax"):
        card.with_overrides(window=NO_WINDOW, normalization="minmax")
