"""segment writes label maps whose geometry equals the input's, for NIfTI, DICOM series, NRRD and MHA."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from _seg_helpers import DATA_DIR, save_micro_segmenter

from pgl_zoo.finetune.export import load_model
from pgl_zoo.imaging.read import read_image
from pgl_zoo.inference import segment_files, segment_image

pytestmark = pytest.mark.skipif(not DATA_DIR.is_dir(), reason=f"real data folder {DATA_DIR} is absent")

CT = DATA_DIR / "ct"
INPUTS = [
    CT / "totalseg_patient_a" / "example_ct.nii.gz",
    CT / "chest_dicom_series",
    CT / "not_hu" / "LIDC2.mha",
    CT / "not_hu" / "CT_pitch.nii.gz",  # tilted acquisition: non-identity direction
]  # ct/tiny_dicom (non-uniform slice spacing) is refused: tests/test_bad_inputs.py


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    # a coarse 6 mm grid keeps these volumes small; CT window and z-score as a CT card would say
    return save_micro_segmenter(tmp_path_factory.mktemp("model") / "m", spacing=(6.0, 6.0, 6.0),
                                window=(-1024.0, 325.0), patch=(16, 16, 16), modality="CT")


def _same_geometry(a: sitk.Image, b: sitk.Image, tol: float = 0.0) -> None:
    assert a.GetSize() == b.GetSize()
    for get in (sitk.Image.GetSpacing, sitk.Image.GetOrigin, sitk.Image.GetDirection):
        if tol == 0.0:
            assert get(a) == get(b)
        else:
            assert np.allclose(get(a), get(b), rtol=tol, atol=tol)


@pytest.mark.parametrize("source", INPUTS, ids=lambda p: p.name)
def test_label_geometry_equals_the_input(tmp_path, model, source):
    image = read_image(source)
    network, card = load_model(model)
    label = segment_image(image, network, card, overlap=0.25)
    _same_geometry(label, image)  # in memory: exactly
    assert label.GetPixelID() in (sitk.sitkUInt8, sitk.sitkUInt16)
    assert int(sitk.GetArrayViewFromImage(label).max()) < 3
    # on disk, in the input's own format (NIfTI for DICOM): exact, except that NIfTI stores the
    # geometry in float32 (and ITK re-orthonormalises its direction), so NIfTI files agree to 1e-6
    written = segment_files([source], tmp_path / "labels", model, overlap=0.25, progress=False)
    assert len(written) == 1
    suffix = ".nii.gz" if source.is_dir() else "".join(source.suffixes)
    assert written[0].name.endswith(suffix)
    _same_geometry(sitk.ReadImage(str(written[0])), image, tol=1e-6 if suffix == ".nii.gz" else 0.0)
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(written[0]))), sitk.GetArrayFromImage(label))


def test_nrrd_input_and_output(tmp_path, model):
    nrrd = tmp_path / "scan.nrrd"
    sitk.WriteImage(read_image(INPUTS[0]), str(nrrd))
    out = tmp_path / "label.nrrd"
    segment_files([nrrd], out, model, progress=False)
    _same_geometry(sitk.ReadImage(str(out)), sitk.ReadImage(str(nrrd)))


def test_cli_segments_several_inputs_into_a_folder_with_previews(tmp_path, model):
    pytest.importorskip("matplotlib")
    out = tmp_path / "labels"
    run = subprocess.run(
        [sys.executable, "-m", "pgl_zoo.cli", "segment", str(INPUTS[0]), str(INPUTS[1]), "-o", str(out),
         "--model", str(model), "--overlap", "0.25", "--sw-batch-size", "2", "--preview", str(tmp_path / "p.png"),
         "--no-progress"], capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in out.iterdir()) == ["chest_dicom_series.nii.gz", "example_ct.nii.gz"]
    pngs = sorted(tmp_path.glob("p_*.png"))
    assert [p.name for p in pngs] == ["p_chest_dicom_series.png", "p_example_ct.png"]
    assert pngs[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_segment_from_a_run_folder_equals_the_exported_folder(tmp_path, model):
    run = tmp_path / "run"
    run.mkdir()
    (run / "model").symlink_to(model)
    source = INPUTS[2]
    a = segment_files([source], tmp_path / "a.nii.gz", run, progress=False)[0]
    b = segment_files([source], tmp_path / "b.nii.gz", model, progress=False)[0]
    read = lambda path: sitk.GetArrayFromImage(sitk.ReadImage(str(path)))  # noqa: E731
    assert np.array_equal(read(a), read(b))
