"""The sample data shipped inside the package: real LCTSC chest CTs with lung labels, 3 mm, <= 15 MB.

The second set (OpenKBP head-and-neck) is tested in tests/test_datasets_hn.py; the size limit here covers both.
"""

from __future__ import annotations

import gzip
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
from _cli import call

from pgl_zoo.datasets import SAMPLE_ROOT, SAMPLE_SETS, sample_lungs_ct
from pgl_zoo.finetune.data import find_cases, read_label_names


@pytest.fixture(scope="module")
def sample():
    return sample_lungs_ct()


def test_sample_cases_are_in_the_package_and_leave_two_source_cases_out(sample, script):
    assert sample.folder == SAMPLE_ROOT / "lctsc_lungs" and SAMPLE_ROOT.parent.name == "pgl_zoo"
    assert sample.case_ids == script.SAMPLE_CASES == tuple(f"lung_00{i}" for i in range(6))
    assert not set(script.HELD_OUT_CASES) & set(sample.case_ids) and len(script.HELD_OUT_CASES) >= 2
    assert [(i.name, l.name) for i, l in sample.pairs] == [(f"{c}_0000.nii.gz", f"{c}.nii.gz") for c in sample.case_ids]
    assert sample.labels == {0: "background", 1: "lungs"}
    assert "CC BY 3.0" in sample.license and "10.7937/K9/TCIA.2017.3r3fvz08" in sample.license
    assert "4568-4581" in sample.license and "CC BY 3.0" in sample.license_line
    readme = (sample.folder / "README.md").read_text()
    assert "make_sample_data.py" in readme and "lung_006" in readme and "lung_007" in readme
    # the folder is a data set `pgl-zoo finetune --data` reads as-is
    pairs = find_cases(sample.folder)
    assert [p.name for p in pairs] == list(sample.case_ids)
    assert [(p.image, p.label) for p in pairs] == list(sample.pairs)
    assert read_label_names(sample.folder) == {"0": "background", "1": "lungs"}


def test_total_size_is_at_most_15_mb(sample):
    assert sample.size_bytes <= 15 * 10**6
    total = sum(f.stat().st_size for f in SAMPLE_ROOT.rglob("*") if f.is_file())
    assert total <= 15 * 10**6
    # every folder under sample_data is a set, and the sets' files are all there is
    assert sorted(p.name for p in SAMPLE_ROOT.iterdir()) == sorted(SAMPLE_SETS) == ["lctsc_lungs", "openkbp_hn"]
    assert sum(load().size_bytes for load in SAMPLE_SETS.values()) == total


@pytest.mark.parametrize("case", range(6))
def test_sample_case_is_real_ct_with_a_lung_label_on_the_same_3mm_grid(sample, case):
    image_path, label_path = sample.pairs[case]
    image, label = sitk.ReadImage(str(image_path)), sitk.ReadImage(str(label_path))
    assert image.GetPixelID() == sitk.sitkInt16 and label.GetPixelID() == sitk.sitkUInt8
    # exactly the same geometry, 3 mm isotropic
    assert image.GetSize() == label.GetSize()
    assert image.GetSpacing() == label.GetSpacing() == (3.0, 3.0, 3.0)
    assert image.GetOrigin() == label.GetOrigin()
    assert image.GetDirection() == label.GetDirection() == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    assert all(60 <= n <= 200 for n in image.GetSize())
    hu, lungs = sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(label)  # (z, y, x)
    assert set(np.unique(lungs)) == {0, 1}
    assert 0.03 <= lungs.mean() <= 0.2  # lungs fill a plausible share of a chest crop
    assert 1.5 <= lungs.sum() * 27e-6 <= 9.0  # litres, both lungs
    # Hounsfield units: air outside, aerated lung inside the label, soft tissue and bone present
    assert hu.min() >= -1024 and -1010 <= np.percentile(hu, 1) <= -950
    assert -950 <= np.median(hu[lungs == 1]) <= -600
    assert np.percentile(hu[lungs == 0], 90) > 0 and hu.max() > 1000
    # the crop keeps 30 mm (10 slices) above and below the lungs, and air around the body in x and y
    slices = np.flatnonzero(lungs.any(axis=(1, 2)))
    assert slices[0] == 10 and slices[-1] == lungs.shape[0] - 11
    assert not lungs[:, 0, :].any() and not lungs[:, -1, :].any()
    assert not lungs[:, :, 0].any() and not lungs[:, :, -1].any()


def test_shipped_files_are_what_the_script_makes_from_the_source(data_dir, sample, script, tmp_path):
    source = data_dir / "ct" / "lctsc_lungs"
    if not (source / "imagesTr").is_dir():
        pytest.skip(f"{source} is absent")
    case = "lung_005"  # the smallest source case
    image_path, label_path = script.make_case(source, case, tmp_path)
    shipped = dict(zip(sample.case_ids, sample.pairs, strict=True))[case]
    for made, kept in zip((image_path, label_path), shipped, strict=True):
        assert made.relative_to(tmp_path) == kept.relative_to(sample.folder)
        assert gzip.decompress(made.read_bytes()) == gzip.decompress(kept.read_bytes()), kept  # header + voxels
        assert made.read_bytes()[:10] == kept.read_bytes()[:10]  # gzip header: mtime 0, no file name
    assert script.dataset_json(list(sample.case_ids)) == (sample.folder / "dataset.json").read_text()
    # the held-out cases exist in the source but are not shipped
    for held_out in script.HELD_OUT_CASES:
        assert (source / "labelsTr" / f"{held_out}.nii.gz").is_file()
    # geometry is honest: the sample's lungs sit where the source's lungs are, in world coordinates
    src_label = sitk.ReadImage(str(source / "labelsTr" / f"{case}.nii.gz"))
    kept_label = sitk.ReadImage(str(shipped[1]))
    back = sitk.Resample(kept_label, src_label, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    a, b = sitk.GetArrayViewFromImage(back) > 0, sitk.GetArrayViewFromImage(src_label) > 0
    assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.9


def test_copy_to_makes_a_usable_copy_and_never_replaces_a_file(sample, tmp_path):
    copy = sample.copy_to(tmp_path / "lungs")
    assert copy.folder == tmp_path / "lungs" and copy.case_ids == sample.case_ids
    assert [p.relative_to(copy.folder) for p in copy.files()] == [p.relative_to(sample.folder) for p in sample.files()]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(copy.files(), sample.files(), strict=True))
    assert [p.name for p in find_cases(copy.folder)] == list(sample.case_ids)
    # a non-empty folder is refused without overwrite
    with pytest.raises(FileExistsError, match="not empty"):
        sample.copy_to(copy.folder)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        sample.copy_to(other)
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]
    # overwrite=True adds the sample beside other files, and keeps identical files
    sample.copy_to(other, overwrite=True)
    assert (other / "notes.txt").read_text() == "mine" and (other / "LICENSE").is_file()
    sample.copy_to(copy.folder, overwrite=True)
    # ... but never replaces a file whose bytes differ, and copies nothing then
    changed = copy.folder / "labelsTr" / "lung_003.nii.gz"
    changed.write_bytes(b"edited by the user")
    (copy.folder / "LICENSE").unlink()
    with pytest.raises(FileExistsError, match="never replaced"):
        sample.copy_to(copy.folder, overwrite=True)
    assert changed.read_bytes() == b"edited by the user" and not (copy.folder / "LICENSE").exists()
    # a file where the folder should be
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(FileExistsError, match="not a folder"):
        sample.copy_to(tmp_path / "a_file", overwrite=True)


def test_cli_prints_the_cases_and_copies_them(sample, capsys, tmp_path):
    code, out, _ = call(capsys, "sample-data")
    assert code == 0
    assert "6 cases" in out and str(sample.folder) in out and "MB" in out
    assert "CC BY 3.0" in out and "10.7937/K9/TCIA.2017.3r3fvz08" in out
    assert all(case in out for case in sample.case_ids)
    code, out, _ = call(capsys, "sample-data", "--path")
    assert code == 0 and out.strip() == str(sample.folder)
    target = tmp_path / "copy"
    code, out, _ = call(capsys, "sample-data", "--copy-to", str(target))
    assert code == 0 and f"copied to {target}" in out and "6 cases" in out
    assert len(find_cases(target)) == 6
    code, out, err = call(capsys, "sample-data", "--copy-to", str(target))
    assert code == 1 and "not empty" in err and len(err.strip().splitlines()) == 1
    code, _, err = call(capsys, "sample-data", "--overwrite")
    assert code == 2 and "--copy-to" in err
    code, out, _ = call(capsys, "sample-data", "--help")
    assert code == 0 and "--copy-to DIR" in out and "--overwrite" in out and "CC BY 3.0" in out


def test_sample_data_and_its_command_do_not_import_torch():
    code = (
        "import sys\n"
        "from pgl_zoo.cli import main\n"
        "main(['sample-data'])\n"
        "main(['sample-data', '--set', 'openkbp_hn'])\n"
        "from pgl_zoo.datasets import sample_hn_ct, sample_lungs_ct\n"
        "assert len(sample_lungs_ct().pairs) == 6 and len(sample_hn_ct().pairs) == 2\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "6 cases" in result.stdout and "2 cases" in result.stdout
