"""Reading every format of the real data, preprocessing, and exact restoration of geometry."""

from __future__ import annotations

import gzip
import math
import struct

import numpy as np
import pytest
import SimpleITK as sitk

from pgl_zoo.atomic import default_file_mode
from pgl_zoo.cards import Preprocessing
from pgl_zoo.errors import ImageReadError
from pgl_zoo.imaging.discover import discover_volumes
from pgl_zoo.imaging.read import read_image
from pgl_zoo.imaging.write import write_image
from pgl_zoo.preprocessing.grid import resample_to_spacing
from pgl_zoo.preprocessing.intensity import normalize_intensities
from pgl_zoo.preprocessing.restore import restore_label
from pgl_zoo.preprocessing.scan import preprocess_image

CT = Preprocessing(spacing_xyz_mm=(2.0, 2.0, 2.0), window=(-1024.0, 325.0), normalization="zscore")


def test_discovers_files_and_dicom_series(data_dir):
    found = discover_volumes(data_dir / "ct")
    names = {str(v.path.relative_to(data_dir / "ct")) for v in found}
    assert {"totalseg_patient_a/example_ct.nii.gz", "not_hu/LIDC2.mha", "liver_3slice_dicom/liver_seg.nrrd",
            "chest_dicom_series", "tiny_dicom", "liver_3slice_dicom/dicom"} <= names
    assert all(v.series_uid for v in found if v.path.is_dir())
    assert not any(v.path.name.startswith("LICENSE") for v in found)


@pytest.mark.parametrize(
    "relative, size_xyz",
    [
        ("ct/totalseg_patient_a/example_ct.nii.gz", (122, 101, 112)),
        ("ct/chest_dicom_series", (512, 512, 10)),
        ("ct/liver_3slice_dicom/liver_seg.nrrd", (512, 512, 3)),
        ("ct/not_hu/LIDC2.mha", (256, 256, 133)),
    ],
)
def test_reads_every_format(data_dir, relative, size_xyz):
    assert read_image(data_dir / relative).GetSize() == size_xyz


@pytest.mark.parametrize(
    "relative",
    ["ct/totalseg_patient_a/example_ct.nii.gz", "ct/chest_dicom_series", "ct/not_hu/CT_pitch.nii.gz"],
)
def test_restored_label_has_exactly_the_input_geometry(data_dir, relative):
    image = read_image(data_dir / relative)
    pre = preprocess_image(image, CT)
    assert pre.array.dtype == np.float32 and pre.array.shape == sitk.GetArrayViewFromImage(pre.grid).shape
    assert abs(float(pre.array.mean())) < 1e-3 and abs(float(pre.array.std()) - 1) < 1e-3
    label = restore_label((pre.array > 0).astype(np.uint8), pre.grid, image)
    assert label.GetSize() == image.GetSize()
    assert label.GetSpacing() == image.GetSpacing()
    assert label.GetOrigin() == image.GetOrigin()
    assert label.GetDirection() == image.GetDirection()


def test_restore_is_the_identity_without_resampling(data_dir):
    image = read_image(data_dir / "ct/totalseg_patient_a/example_ct_sm.nii.gz")
    pre = preprocess_image(image, Preprocessing(spacing_xyz_mm=None, orientation="LPS", normalization="none"))
    labels = (np.arange(pre.array.size).reshape(pre.array.shape) % 7).astype(np.uint8)
    restored = restore_label(labels, pre.grid, image)
    # same voxels, reoriented back: compare through physical space on a few voxels
    grid_label = sitk.GetImageFromArray(labels)
    grid_label.CopyInformation(pre.grid)
    for index in [(0, 0, 0), (10, 20, 5), (121, 100, 29)]:
        point = image.TransformIndexToPhysicalPoint(index)
        assert restored[index] == grid_label[grid_label.TransformPhysicalPointToIndex(point)]


def test_resample_keeps_extent():
    image = sitk.GetImageFromArray(np.zeros((10, 20, 30), np.float32))
    image.SetSpacing((1.0, 1.0, 3.0))
    out = resample_to_spacing(image, (2.0, 2.0, 1.5))
    assert out.GetSize() == (15, 10, 20)
    assert out.GetOrigin() == image.GetOrigin()


def test_normalisation_modes():
    hu = np.array([-2000, -1024, 0, 325, 3000], np.float32)
    assert np.allclose(normalize_intensities(hu, (-1024, 325), "minmax"), [0, 0, 1024 / 1349, 1, 1])
    z = normalize_intensities(hu, (-1024, 325), "zscore")
    assert abs(z.mean()) < 1e-6 and abs(z.std() - 1) < 1e-5


def test_bad_files_give_one_line_naming_the_file(tmp_path, data_dir):
    truncated = tmp_path / "cut.nii.gz"
    truncated.write_bytes((data_dir / "ct/totalseg_patient_a/example_ct_sm.nii.gz").read_bytes()[:3000])
    flat = tmp_path / "flat.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((1, 8, 8), np.int16)), str(flat))
    garbage = tmp_path / "garbage.nii.gz"
    garbage.write_bytes(gzip.compress(b"not an image"))
    # ITK itself reads a truncated NIfTI without complaint (missing voxels come back as zeros)
    plain = tmp_path / "cut.nii"
    sitk.WriteImage(read_image(data_dir / "ct/totalseg_patient_a/example_ct_sm.nii.gz"), str(plain))
    plain.write_bytes(plain.read_bytes()[:-1000])
    cases = [(truncated, "compressed data is truncated"), (plain, "file is truncated"), (flat, "not a 3D volume"),
             (garbage, "cannot be read as an image (Unable to determine ImageIO reader for)"),
             (tmp_path / "missing.nrrd", "no such file")]
    for path, message in cases:
        with pytest.raises(ImageReadError) as info:
            read_image(path)
        assert str(path) in str(info.value) and message in str(info.value)
        assert "\n" not in str(info.value)


def test_write_is_atomic_and_round_trips(tmp_path):
    image = sitk.GetImageFromArray(np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
    image.SetSpacing((0.5, 0.7, 2.0))
    path = write_image(image, tmp_path / "sub" / "label.nii.gz")
    again = sitk.ReadImage(str(path))
    assert np.array_equal(sitk.GetArrayFromImage(again), sitk.GetArrayFromImage(image))
    assert np.allclose(again.GetSpacing(), image.GetSpacing())
    assert [p.name for p in path.parent.iterdir()] == ["label.nii.gz"]
    assert path.stat().st_mode & 0o777 == default_file_mode()  # not mkstemp's private 0o600


def test_geometry_differences_is_the_one_comparison_of_grids():
    from pgl_zoo.imaging.geometry import geometry_differences

    def grid(spacing=(0.8, 0.8, 2.5), origin=(-200.0, -180.0, 40.0), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1),
             size=(8, 9, 10)):
        image = sitk.Image(list(size), sitk.sitkUInt8)
        image.SetSpacing(spacing)
        image.SetOrigin(origin)
        image.SetDirection([float(d) for d in direction])
        return image

    base = grid()
    assert geometry_differences(base, grid()) == []
    assert geometry_differences(base, grid(origin=(-200.0, -180.0, 40.00005))) == []  # well below a voxel
    assert [d.split()[0] for d in geometry_differences(base, grid(spacing=(0.8, 0.8, 2.52)))] == ["spacing"]
    assert [d.split()[0] for d in geometry_differences(base, grid(origin=(-199.5, -180.0, 40.0)))] == ["origin"]
    flipped = grid(direction=(-1, 0, 0, 0, 1, 0, 0, 0, 1))
    assert [d.split()[0] for d in geometry_differences(base, flipped)] == ["direction"]
    assert geometry_differences(base, grid(size=(8, 9, 11)))[0].startswith("size (8, 9, 10) vs (8, 9, 11)")


def _raw_header(version: int, endian: str = "<") -> bytes:
    """A NIfTI-1 (348 bytes) or NIfTI-2 (540) header built from the specification's offsets: dims 5 x 6 x 7,
    spacing 0.5 / 2 / 3 mm with qfac -1, qform: a 90-degree turn about z plus (10, 20, 30) mm; sform: rows."""
    dims, pixdim = (3, 5, 6, 7, 1, 1, 1, 1), (-1.0, 0.5, 2.0, 3.0, 1, 1, 1, 1)
    quatern = (0.0, 0.0, math.sqrt(0.5), 10.0, 20.0, 30.0)
    srows = (0, -2, 0, 10, 0.5, 0, 0, 20, 0, 0, -3, 30)
    if version == 1:
        header = bytearray(348)
        layout = ("h", "f", "h", 40, 76, 252, 256, 280)
    else:
        header = bytearray(540)
        layout = ("q", "d", "i", 16, 104, 344, 352, 400)
    ints, floats, codes, at_dims, at_pixdim, at_codes, at_quatern, at_srows = layout
    struct.pack_into(endian + "i", header, 0, len(header))
    struct.pack_into(endian + "8" + ints, header, at_dims, *dims)
    struct.pack_into(endian + "8" + floats, header, at_pixdim, *pixdim)
    struct.pack_into(endian + "2" + codes, header, at_codes, 1, 2)
    struct.pack_into(endian + "6" + floats, header, at_quatern, *quatern)
    struct.pack_into(endian + "12" + floats, header, at_srows, *srows)
    return bytes(header)


@pytest.mark.parametrize("endian", ["<", ">"])
def test_nifti1_and_nifti2_headers_give_the_same_forms(endian):
    from pgl_zoo.imaging.nifti_header import _nifti_forms

    one, two = _nifti_forms(_raw_header(1, endian)), _nifti_forms(_raw_header(2, endian))
    assert one is not None and two is not None
    for forms in (one, two):
        assert tuple(forms["dims"][:4]) == (3, 5, 6, 7) and (forms["qcode"], forms["scode"]) == (1, 2)
        # quaternion (0, 0, sqrt(.5)) is 90 degrees about z; columns scaled by the spacing, the third by qfac -1
        expected = np.array([[0, -2, 0, 10], [0.5, 0, 0, 20], [0, 0, -3, 30], [0, 0, 0, 1]], dtype=float)
        np.testing.assert_allclose(forms["qform"], expected, atol=1e-6)
        np.testing.assert_allclose(forms["sform"], expected, atol=1e-6)
    assert _nifti_forms(_raw_header(1, endian)[:300]) is None  # truncated: not a header
