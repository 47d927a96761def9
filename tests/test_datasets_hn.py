"""The second sample set shipped inside the package: two OpenKBP head-and-neck test patients, seven organs at risk."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from _cli import call

from pgl_zoo.datasets import SAMPLE_ROOT, SAMPLE_SETS, sample_hn_ct
from pgl_zoo.errors import DataError
from pgl_zoo.finetune.data import find_cases, read_label_names
from pgl_zoo.partial_labels import read_labelled_classes

CASES = ("hn_247", "hn_286")
LABELS = {0: "background", 1: "Brainstem", 2: "SpinalCord", 3: "RightParotid", 4: "LeftParotid", 5: "Esophagus",
          6: "Larynx", 7: "Mandible"}


@pytest.fixture(scope="module")
def hn():
    return sample_hn_ct()


@pytest.fixture(scope="module")
def source(data_dir):
    folder = data_dir / "ct" / "openkbp_hn"
    if not (folder / "imagesTr").is_dir():
        pytest.skip(f"{folder} is absent")
    return folder


def test_hn_sample_is_in_the_package_in_nnunet_layout(hn, script):
    assert hn.name == "openkbp_hn" and hn.folder == SAMPLE_ROOT / "openkbp_hn"
    assert SAMPLE_SETS["openkbp_hn"] is sample_hn_ct
    assert hn.case_ids == CASES == script.HN_CASES
    assert [(i.name, lab.name) for i, lab in hn.pairs] == [(f"{c}_0000.nii.gz", f"{c}.nii.gz") for c in CASES]
    assert hn.labels == LABELS
    assert sorted(p.relative_to(hn.folder).as_posix() for p in hn.files()) == [
        "LICENSE", "README.md", "dataset.json", "imagesTr/hn_247_0000.nii.gz", "imagesTr/hn_286_0000.nii.gz",
        "labelsTr/hn_247.nii.gz", "labelsTr/hn_286.nii.gz", "structures.json"]
    assert hn.labelled_classes_file == hn.folder / "structures.json"
    assert 0.5e6 <= hn.size_bytes <= 1.0e6
    meta = json.loads((hn.folder / "dataset.json").read_text())
    assert meta["numTraining"] == 2 and [t["label"] for t in meta["training"]] == [
        f"./labelsTr/{c}.nii.gz" for c in CASES]
    assert all((hn.folder / t["image"]).is_file() for t in meta["training"])
    # the folder is a data set `pgl-zoo finetune --data` reads as-is
    pairs = find_cases(hn.folder)
    assert [p.name for p in pairs] == list(CASES)
    assert [(p.image, p.label) for p in pairs] == list(hn.pairs)
    assert read_label_names(hn.folder) == {str(k): v for k, v in LABELS.items()}


def test_the_lungs_set_has_no_labelled_classes_file():
    assert SAMPLE_SETS["lctsc_lungs"]().labelled_classes_file is None


def test_shipped_files_are_the_source_bytes_and_what_the_script_makes(hn, script, source, tmp_path):
    for case, (image, label) in zip(hn.case_ids, hn.pairs, strict=True):
        assert image.read_bytes() == (source / "imagesTr" / f"{case}.nii.gz").read_bytes(), image
        assert label.read_bytes() == (source / "labelsTr" / f"{case}.nii.gz").read_bytes(), label
    # structures.json: the source's entries for these cases, unchanged, in the same shape
    source_structures = json.loads((source / "structures.json").read_text())
    shipped = json.loads(hn.labelled_classes_file.read_text())
    assert shipped == {case: source_structures[case] for case in CASES}
    assert all(entry["openkbp_split"] == "test-pats" for entry in shipped.values())
    assert {case: entry["patient"] for case, entry in shipped.items()} == {"hn_247": "pt_247", "hn_286": "pt_286"}
    # labels as the source's dataset.json names them
    source_labels = json.loads((source / "dataset.json").read_text())["labels"]
    assert json.loads((hn.folder / "dataset.json").read_text())["labels"] == source_labels
    # the script regenerates every file but README.md and LICENSE byte for byte
    script.make_hn(source, tmp_path, list(CASES))
    made = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    kept = [p.relative_to(hn.folder) for p in hn.files() if p.name not in ("README.md", "LICENSE")]
    assert made == kept
    for relative in made:
        assert (tmp_path / relative).read_bytes() == (hn.folder / relative).read_bytes(), relative


def test_the_script_refuses_a_patient_outside_openkbps_test_split(script, source, tmp_path):
    structures = json.loads((source / "structures.json").read_text())
    training_case = next(case for case, entry in structures.items() if entry["openkbp_split"] == "train-pats")
    with pytest.raises(ValueError, match="test-pats"):
        script.make_hn(source, tmp_path / "out", [training_case])
    assert not (tmp_path / "out").exists()  # refused before anything was written


@pytest.mark.parametrize("case", range(2))
def test_case_is_real_ct_with_seven_organs_on_the_image_grid(hn, case):
    image_path, label_path = hn.pairs[case]
    image, label = sitk.ReadImage(str(image_path)), sitk.ReadImage(str(label_path))
    assert image.GetPixelID() == sitk.sitkInt16 and label.GetPixelID() == sitk.sitkUInt8
    # exactly the image's grid; the spacing is the patient's (as structures.json records it)
    assert image.GetSize() == label.GetSize() == (128, 128, 128)
    assert image.GetSpacing() == label.GetSpacing()
    assert image.GetOrigin() == label.GetOrigin()
    assert image.GetDirection() == label.GetDirection() == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    voxel_mm = json.loads(hn.labelled_classes_file.read_text())[hn.case_ids[case]]["voxel_mm"]
    assert np.allclose(image.GetSpacing(), voxel_mm, atol=1e-3)
    assert all(2.0 <= s <= 5.5 for s in image.GetSpacing())
    hu, organs = sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(label)  # (z, y, x)
    # Hounsfield units: -1024 outside the stored body region, soft tissue and bone inside it
    assert hu.min() == -1024 and np.percentile(hu, 50) == -1024
    assert 0.03 <= (hu > -500).mean() <= 0.5  # a head and neck fills part of the 128^3 box
    assert hu.max() > 1000  # bone
    # labels 0..7, all seven organs present, each a plausible size and the right tissue
    assert set(np.unique(organs).tolist()) == set(LABELS)
    counts = np.bincount(organs.ravel(), minlength=8)
    assert all(100 <= counts[k] <= 5000 for k in range(1, 8)), counts
    assert -60 <= np.median(hu[organs == 1]) <= 80  # brainstem: soft tissue
    assert np.median(hu[organs == 7]) >= 300  # mandible: bone
    assert np.median(hu[(organs >= 1) & (organs <= 4)]) > -200  # brainstem, cord, parotids: not air


def test_structures_json_is_a_labelled_classes_file_that_covers_every_label(hn, tmp_path):
    names = read_label_names(hn.folder)
    labelled = read_labelled_classes(hn.labelled_classes_file, names, len(LABELS))
    labelled.check_cases(hn.case_ids)
    for case, (_, label_path) in zip(hn.case_ids, hn.pairs, strict=True):
        label = sitk.GetArrayFromImage(sitk.ReadImage(str(label_path)))
        labelled.check_label(case, label)  # every label value present is listed as contoured
        assert labelled.of(case) == frozenset(range(8))
    # the check bites: the same label maps against a file that drops the larynx of hn_247 are refused
    data = json.loads(hn.labelled_classes_file.read_text())
    data["hn_247"]["structures"].remove("Larynx")
    edited = tmp_path / "structures.json"
    edited.write_text(json.dumps(data))
    partial = read_labelled_classes(edited, names, len(LABELS))
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(hn.pairs[0][1])))
    with pytest.raises(DataError, match=r"\[6\]"):
        partial.check_label("hn_247", label)


def test_license_and_readme_name_openkbp_research_use_and_the_citation(hn):
    for text in (hn.license, hn.license_line):
        assert "OpenKBP" in text and "research use" in text.lower() and "MIT" in text
        assert "Babier" in text and "5549-5561" in text and "10.1002/mp.14845" in text
    assert "TCIA" in hn.license and "not verified" in hn.license.lower() and "ababier/open-kbp" in hn.license
    readme = (hn.folder / "README.md").read_text()
    assert "make_sample_data.py --set openkbp_hn" in readme and "test patients" in readme
    assert "pt_247" in readme and "pt_286" in readme and "--labelled-classes" in readme
    assert "unknown" in readme  # the partial-contour caveat


def test_cli_shows_and_copies_the_hn_set(hn, capsys, tmp_path):
    code, out, _ = call(capsys, "sample-data", "--set", "openkbp_hn")
    assert code == 0
    assert "openkbp_hn: 2 cases" in out and str(hn.folder) in out and "0.7 MB" in out
    assert all(case in out for case in CASES) and "lung_000" not in out
    assert f"labelled classes: {hn.labelled_classes_file}" in out
    assert "OpenKBP" in out and "research use" in out
    code, out, _ = call(capsys, "sample-data", "--set", "openkbp_hn", "--path")
    assert code == 0 and out.strip() == str(hn.folder)
    target = tmp_path / "hn"
    code, out, _ = call(capsys, "sample-data", "--set", "openkbp_hn", "--copy-to", str(target))
    assert code == 0 and f"copied to {target}" in out and "2 cases" in out
    assert f"labelled classes: {target / 'structures.json'}" in out
    assert [p.name for p in find_cases(target)] == list(CASES)
    copied = sorted(p.relative_to(target) for p in target.rglob("*") if p.is_file())
    assert copied == [p.relative_to(hn.folder) for p in hn.files()]
    assert all((target / p).read_bytes() == (hn.folder / p).read_bytes() for p in copied)
    code, _, err = call(capsys, "sample-data", "--set", "nope")
    assert code == 2 and "openkbp_hn" in err
    # the default is still the lungs
    code, out, _ = call(capsys, "sample-data", "--path")
    assert code == 0 and out.strip() == str(SAMPLE_ROOT / "lctsc_lungs")
    code, out, _ = call(capsys, "sample-data", "--help")
    assert code == 0 and "--set" in out and "openkbp_hn" in out and "lctsc_lungs" in out
