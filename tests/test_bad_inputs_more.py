"""The bad-input matrix of issue 18 (its non-security items), continuing tests/test_bad_inputs.py with the
same rules: one line on stderr naming the file (or option) and the problem, a non-zero exit, no traceback,
nothing already written touched; or, where a scan is only suspicious, a warning line and a result.

Categories as in the README's table: data lost or overwritten, silently wrong results, resources, errors
that did not name the problem. Each case failed on the code before the fixes of issue 18.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import resource
import shutil
import signal
import struct
import threading
import time
import weakref
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from _cli import call
from _seg_helpers import save_micro_segmenter, write_micro_pretrain_set
from test_bad_inputs import digest, pretrain_args, refused, scan, write

# ---------------------------------------------------------------------------------------------------------------
# helpers


def nifti(path: Path, size=(8, 8, 8), pixdim=(1.0, 1.0, 1.0), qform=None, sform=None) -> Path:
    """A float32 NIfTI-1 file written byte by byte (nibabel and ITK repair what these tests need broken).
    ``qform``: (quatern b, c, d, qoffset x, y, z) with qform_code 1; ``sform``: 3 x 4 rows, sform_code 1."""
    header = bytearray(348)
    struct.pack_into("<i", header, 0, 348)
    struct.pack_into("<8h", header, 40, 3, *size, 1, 1, 1, 1)
    struct.pack_into("<hh", header, 70, 16, 32)
    struct.pack_into("<8f", header, 76, 1, *pixdim, 1, 1, 1, 1)
    struct.pack_into("<f", header, 108, 352.0)
    struct.pack_into("<hh", header, 252, 1 if qform is not None else 0, 1 if sform is not None else 0)
    if qform is not None:
        struct.pack_into("<6f", header, 256, *qform)
    if sform is not None:
        struct.pack_into("<12f", header, 280, *np.asarray(sform, dtype=float).ravel())
    header[344:348] = b"n+1\0"
    data = np.random.default_rng(0).normal(0, 1, size[::-1]).astype("<f4").tobytes()
    path.write_bytes(bytes(header) + b"\0" * 4 + data)
    return path


def dicom_series(folder: Path, slices: int = 10, size: int = 8) -> list[Path]:
    """A synthetic CT DICOM series (int16 HU, 1 x 1 x 2 mm), one file per slice."""
    folder.mkdir(parents=True, exist_ok=True)
    array = (np.random.default_rng(0).normal(0, 300, (slices, size, size)) - 200).astype(np.int16)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    uid = "1.2.826.0.1.3680043.2.1125.18"
    files = []
    for i in range(slices):
        image = sitk.GetImageFromArray(array[i])
        for key, value in (("0008|0060", "CT"), ("0020|000d", uid + ".1"), ("0020|000e", uid + ".2"),
                           ("0008|0018", f"{uid}.3.{i}"), ("0020|0032", f"0\\0\\{2.0 * i}"),
                           ("0020|0037", "1\\0\\0\\0\\1\\0"), ("0020|0013", str(i)), ("0028|0030", "1\\1")):
            image.SetMetaData(key, value)
        files.append(folder / f"s{i:02d}.dcm")
        writer.SetFileName(str(files[-1]))
        writer.Execute(image)
    return files


@contextlib.contextmanager
def file_size_limit(nbytes: int):
    """RLIMIT_FSIZE for this process: a write past ``nbytes`` fails with EFBIG ("File too large"), a real
    write error from the kernel, as a full disk gives ENOSPC. Python ignores SIGXFSZ, so no signal kills us."""
    if signal.getsignal(signal.SIGXFSZ) != signal.SIG_IGN:
        pytest.skip("SIGXFSZ is not ignored in this interpreter")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


class FifoWatch:
    """Opens the write end of a FIFO as soon as someone blocks reading it (that reader then sees end of file
    instead of hanging for ever); ``opened`` says whether anyone ever tried to read it."""

    def __init__(self, fifo: Path) -> None:
        self.fifo, self.opened, self._stop = fifo, False, False
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop:
            try:
                fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)  # fails (ENXIO) while no reader waits
            except OSError:
                time.sleep(0.02)
                continue
            self.opened = True
            os.close(fd)

    def __enter__(self) -> FifoWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop = True
        self._thread.join(timeout=5)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return save_micro_segmenter(tmp_path_factory.mktemp("model") / "m", num_classes=2, patch=(8, 8, 8))


@pytest.fixture(scope="module")
def pretrain_data(tmp_path_factory) -> dict:
    return write_micro_pretrain_set(tmp_path_factory.mktemp("pretrain"))


@pytest.fixture(scope="module")
def ct_model(tmp_path_factory) -> Path:
    return save_micro_segmenter(tmp_path_factory.mktemp("ct") / "m", num_classes=2, patch=(8, 8, 8), modality="CT",
                                window=(-1024.0, 325.0))


def labels(root: Path, cases: dict[str, np.ndarray]) -> Path:
    for name, array in cases.items():
        write(root / f"{name}.nii.gz", array)
    return root


def blob(seed: int = 0, shape=(8, 8, 8)) -> np.ndarray:
    array = np.zeros(shape, np.uint8)
    z, y, x = np.random.default_rng(seed).integers(1, 4, 3)
    array[z : z + 3, y : y + 3, x : x + 3] = 1
    return array


# ---------------------------------------------------------------------------------------------------------------
# 1. Data lost or overwritten


def test_pretrain_into_a_folder_it_did_not_create_needs_overwrite(capsys, tmp_path, pretrain_data):
    out = tmp_path / "finetune-run"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"num_classes": 3, "epochs": 50}))
    (out / "metrics.jsonl").write_text('{"epoch": 1, "val_mean_dice": 0.8}\n')
    (out / "notes.txt").write_text("my notes")
    before = {p.name: digest(p) for p in out.iterdir()}
    refused(capsys, *pretrain_args(pretrain_data, out, "--steps", "1"), fragments=[out, "--overwrite"])
    assert {p.name: digest(p) for p in out.iterdir() if p.name != ".lock"} == before


def test_pretrain_restarts_only_its_own_run_that_stopped_before_a_checkpoint(capsys, tmp_path, pretrain_data):
    """Not a failure before the fixes: what the --out rule must keep allowing (a lock file, a failed start)
    and what it refuses (a run that logged steps but wrote no checkpoint)."""
    out = tmp_path / "run"
    out.mkdir()
    (out / ".lock").write_text("123\n")
    code, _, err = call(capsys, *pretrain_args(pretrain_data, out, "--steps", "1"))
    assert code == 0, err
    config = (out / "config.json").read_text()
    for name in ("checkpoint.pt", "summary.json", "loss.png"):
        (out / name).unlink(missing_ok=True)
    (out / "metrics.jsonl").write_text("")  # what a run that failed before its first step leaves
    code, _, err = call(capsys, *pretrain_args(pretrain_data, out, "--steps", "1"))
    assert code == 0, err
    (out / "checkpoint.pt").unlink()
    (out / "summary.json").unlink()
    (out / "loss.png").unlink(missing_ok=True)
    assert (out / "config.json").read_text() == config
    refused(capsys, *pretrain_args(pretrain_data, out, "--steps", "1"), fragments=[out, "no checkpoint", "--overwrite"])


def test_segment_never_replaces_an_existing_label_without_overwrite(capsys, tmp_path, model, monkeypatch):
    source = write(tmp_path / "in" / "a.nrrd", scan())
    folder = tmp_path / "labels"
    folder.mkdir()
    corrected = folder / "a.nrrd"
    corrected.write_bytes(b"a hand-corrected contour")
    single = tmp_path / "one.nii.gz"
    single.write_bytes(b"another one")
    png = tmp_path / "preview.png"
    png.write_bytes(b"my figure")
    with monkeypatch.context() as m:
        m.setattr("pgl_zoo.api.load_segmentation_model", lambda *a, **k: pytest.fail("model loaded"))
        refused(capsys, "segment", source, "-o", folder, "--model", model, "--no-progress",
                fragments=[corrected, "--overwrite"])
        refused(capsys, "segment", source, "-o", single, "--model", model, "--no-progress",
                fragments=[single, "--overwrite"])
        refused(capsys, "segment", source, "-o", tmp_path / "new.nii.gz", "--model", model, "--preview", png,
                "--no-progress", fragments=[png, "--overwrite"])
    assert corrected.read_bytes() == b"a hand-corrected contour" and single.read_bytes() == b"another one"
    assert png.read_bytes() == b"my figure" and not (tmp_path / "new.nii.gz").exists()
    code, _, err = call(capsys, "segment", source, "-o", folder, "--model", model, "--no-progress", "--overwrite")
    assert code == 0, err
    assert sitk.ReadImage(str(corrected)).GetSize() == (12, 12, 12)


def test_evaluate_out_never_replaces_another_file_without_overwrite(capsys, tmp_path):
    pred = labels(tmp_path / "pred", {"c": blob(0)})
    gt = labels(tmp_path / "gt", {"c": blob(1)})
    mine = tmp_path / "results.csv"
    mine.write_text("patient,weight\n1,70\n")
    refused(capsys, "evaluate", "--pred", pred, "--gt", gt, "--out", mine, fragments=[mine, "--overwrite"])
    assert mine.read_text() == "patient,weight\n1,70\n" and not (tmp_path / "results.json").exists()
    code, _, err = call(capsys, "evaluate", "--pred", pred, "--gt", gt, "--out", mine, "--overwrite")
    assert code == 0, err
    assert mine.read_text().startswith("case,status")
    code, _, err = call(capsys, "evaluate", "--pred", pred, "--gt", gt, "--out", mine)
    assert code == 0, err  # an earlier report of evaluate is refreshed


def test_evaluate_reports_survive_a_full_disk(capsys, tmp_path):
    pred = labels(tmp_path / "pred", {f"c{i}": blob(i) for i in range(3)})
    gt = labels(tmp_path / "gt", {f"c{i}": blob(i + 5) for i in range(3)})
    code, _, err = call(capsys, "evaluate", "--pred", pred, "--gt", gt)
    assert code == 0, err
    reports = [pred / "evaluation.csv", pred / "evaluation.json"]
    before = [digest(p) for p in reports]
    with file_size_limit(64):  # every report is longer
        line = refused(capsys, "evaluate", "--pred", pred, "--gt", gt, fragments=["File too large"])
    assert str(reports[0]) in line or str(reports[1]) in line
    assert [digest(p) for p in reports] == before
    assert json.loads(reports[1].read_text())["cases"]
    assert [p.name for p in pred.iterdir() if p.name.startswith(".")] == []


# ---------------------------------------------------------------------------------------------------------------
# 2. Silently wrong results


def test_a_nifti_spacing_of_zero_is_refused(capsys, tmp_path, model):
    source = nifti(tmp_path / "a.nii", pixdim=(1.0, 0.0, 1.0))
    refused(capsys, "segment", source, "-o", tmp_path / "out.nii.gz", "--model", model, "--no-progress",
            fragments=[source, "along y", "pixdim[2]"])
    assert not (tmp_path / "out.nii.gz").exists()


def test_a_nifti_whose_qform_and_sform_disagree_is_refused(capsys, tmp_path, model):
    sform = [[1, 0, 0, 80], [0, 1, 0, 0], [0, 0, 1, 0]]  # the same grid 80 mm along x
    source = nifti(tmp_path / "a.nii", qform=(0, 0, 0, 0, 0, 0), sform=sform)
    refused(capsys, "segment", source, "-o", tmp_path / "out.nii.gz", "--model", model, "--no-progress",
            fragments=[source, "qform and sform disagree by 80.0 mm"])
    # agreeing forms are fine
    same = nifti(tmp_path / "b.nii", qform=(0, 0, 0, 80, 0, 0), sform=sform)
    code, _, err = call(capsys, "segment", same, "-o", tmp_path / "b_out.nii.gz", "--model", model, "--no-progress")
    assert code == 0, err


@pytest.mark.parametrize("dtype, shift", [(np.uint16, 1024), (np.uint8, None)])
def test_segment_warns_about_a_ct_not_in_hu(capsys, tmp_path, ct_model, dtype, shift):
    hu = np.random.default_rng(0).normal(-300, 400, (12, 12, 12)).clip(-1024, 1500)
    array = (hu + shift) if shift else (hu + 1024) / 2524 * 255  # HU + 1024, or an 8-bit export
    source = write(tmp_path / "ct.nrrd", array.astype(dtype))
    code, _, err = call(capsys, "segment", source, "-o", tmp_path / "out.nrrd", "--model", ct_model, "--no-progress")
    assert code == 0, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning:") and str(source) in lines[0], err
    assert "not in HU" in lines[0]
    # a scan in HU gets no warning
    hu_scan = write(tmp_path / "hu.nrrd", hu.astype(np.int16))
    code, _, err = call(capsys, "segment", hu_scan, "-o", tmp_path / "hu_out.nrrd", "--model", ct_model,
                        "--no-progress")
    assert code == 0 and err.strip() == "", err


def test_segment_warns_about_a_label_map_given_as_a_scan(capsys, tmp_path, model):
    mask = np.zeros((12, 12, 12), np.uint8)
    mask[2:8, 3:9, 2:10] = 1
    mask[4:6, 4:6, 4:6] = 2
    source = write(tmp_path / "case_seg.nii.gz", mask)
    code, _, err = call(capsys, "segment", source, "-o", tmp_path / "out.nii.gz", "--model", model, "--no-progress")
    assert code == 0, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and str(source) in lines[0] and "looks like a label map" in lines[0], err
    mri = write(tmp_path / "mri.nii.gz", np.random.default_rng(1).integers(0, 255, (12, 12, 12)).astype(np.uint8))
    code, _, err = call(capsys, "segment", mri, "-o", tmp_path / "mri_out.nii.gz", "--model", model, "--no-progress")
    assert code == 0 and err.strip() == "", err  # an 8-bit scan is noisy, not a label map


def test_a_truncated_last_dicom_slice_is_refused(capsys, tmp_path, model):
    files = dicom_series(tmp_path / "series")
    os.truncate(files[-1], files[-1].stat().st_size // 2)  # a copy cut short
    refused(capsys, "segment", tmp_path / "series", "-o", tmp_path / "out.nii.gz", "--model", model, "--no-progress",
            fragments=[files[-1], "truncated"])
    assert not (tmp_path / "out.nii.gz").exists()


BAD_OPTIONS = [
    ("finetune", ["--window", "325,-1024"], "low must be below high"),
    ("finetune", ["--patch-size", "1.5,16,16"], "not a whole number"),
    ("finetune", ["--patch-size", "0,0,0"], ">= 1"),
    ("finetune", ["--patch-size", "100000,16,16"], "more than the limit"),
    ("finetune", ["--spacing", "0,0,0"], "> 0"),
    ("finetune", ["--foreground-probability", "5"], "0<=x<=1"),
    ("finetune", ["--warmup-steps", "-1"], "x>=0"),
    ("finetune", ["--freeze-encoder-epochs", "-2"], "x>=0"),
    ("finetune", ["--overlap", "1.0"], "0<=x<1"),
    ("pretrain", ["--warmup", "-1"], "x>=0"),
    ("pretrain", ["--clip-grad", "-1"], "x>=0"),
    ("pretrain", ["--checkpoint-every", "-5"], "x>=0"),
    ("pretrain", ["--log-every", "0"], "x>=1"),
    ("pretrain", ["--momentum", "2"], "0<=x<=1"),
    ("pretrain", ["--spacing", "2,-2,2"], "> 0"),
    ("pretrain", ["--window", "325,-1024"], "low must be below high"),
    ("segment", ["--window-size", "0,0,0"], ">= 1"),
    ("segment", ["--window-size", "-8,8,8"], ">= 1"),
    ("segment", ["--overlap", "1.0"], "0<=x<1"),
]


@pytest.mark.parametrize("command, option, fragment", BAD_OPTIONS, ids=[" ".join([c, *o]) for c, o, _ in BAD_OPTIONS])
def test_option_values_are_checked_before_any_work(capsys, tmp_path, monkeypatch, command, option, fragment):
    def no_work(*args, **kwargs):
        pytest.fail(f"{command} started with {option}")

    monkeypatch.setattr("pgl_zoo.finetune.trainer.finetune", no_work)
    monkeypatch.setattr("pgl_zoo.pretrain.trainer.pretrain", no_work)
    monkeypatch.setattr("pgl_zoo.inference.segment_files", no_work)
    args = {"finetune": ["finetune", "--data", tmp_path, "--num-classes", "2", "--out", tmp_path / "run"],
            "pretrain": ["pretrain", "--data", tmp_path, "--out", tmp_path / "run"],
            "segment": ["segment", tmp_path / "a.nrrd", "-o", tmp_path / "o.nrrd", "--model", "m"]}[command]
    refused(capsys, *args, *option, fragments=[option[0], fragment])


def test_the_python_api_refuses_what_the_options_refuse(tmp_path):
    from pgl_zoo.errors import PglZooError
    from pgl_zoo.finetune import FinetuneConfig
    from pgl_zoo.pretrain.config import PretrainConfig

    for bad in ({"overlap": 1.0}, {"window": (325, -1024)}, {"patch_size_zyx": (1.5, 16, 16)},
                {"foreground_probability": 5}):
        with pytest.raises(PglZooError, match="--"):
            FinetuneConfig(out=tmp_path, num_classes=2, data=tmp_path, **bad)
    for bad in ({"base_momentum": 2}, {"warmup_steps": -1}, {"spacing": (0, 0, 0)}, {"patch_size": (0, 0, 0)},
                {"log_every": 0}):
        with pytest.raises(PglZooError, match="--"):
            PretrainConfig(**bad)


def test_pgl_zoo_max_voxels_is_read_strictly(capsys, tmp_path, model, monkeypatch):
    source = write(tmp_path / "a.nrrd", scan())  # 1,728 voxels
    monkeypatch.setenv("PGL_ZOO_MAX_VOXELS", "abc")
    refused(capsys, "segment", source, "-o", tmp_path / "o.nrrd", "--model", model, "--no-progress",
            fragments=["PGL_ZOO_MAX_VOXELS='abc'", "whole number"])
    monkeypatch.setenv("PGL_ZOO_MAX_VOXELS", "1e3")  # accepted, as 1000
    refused(capsys, "segment", source, "-o", tmp_path / "o.nrrd", "--model", model, "--no-progress",
            fragments=[source, "more than the limit 1,000"])
    assert not (tmp_path / "o.nrrd").exists()


# ---------------------------------------------------------------------------------------------------------------
# 3. Resources


def test_a_dicom_series_claiming_huge_slices_is_refused_before_reading(capsys, tmp_path, model, monkeypatch):
    files = dicom_series(tmp_path / "series", slices=2)
    for path in files:  # Rows and Columns (implicit VR: tag, 4-byte length 2, value) claim 30000 x 30000
        data = bytearray(path.read_bytes())
        for tag in (b"\x28\x00\x10\x00", b"\x28\x00\x11\x00"):
            at = data.find(tag + b"\x02\x00\x00\x00")
            assert at > 0
            struct.pack_into("<H", data, at + 8, 30000)
        path.write_bytes(bytes(data))
    monkeypatch.setattr(sitk.ImageSeriesReader, "Execute", lambda *a: pytest.fail("pixels read (3.6 GB)"))
    refused(capsys, "segment", tmp_path / "series", "-o", tmp_path / "o.nii.gz", "--model", model, "--no-progress",
            fragments=[files[0], "30000x30000", "truncated or corrupt"])


def test_a_raw_nrrd_claiming_more_than_it_holds_is_refused_before_reading(capsys, tmp_path, model, monkeypatch):
    header = b"NRRD0004\ntype: float\ndimension: 3\nsizes: 200 200 200\nendian: little\nencoding: raw\n\n"
    bomb = tmp_path / "bomb.nrrd"
    bomb.write_bytes(header + b"\0" * 100_000)  # 32 MB claimed, 0.1 MB there (within 1032:1 of deflate)
    monkeypatch.setattr(sitk, "ReadImage", lambda *a, **k: pytest.fail("pixels read"))
    refused(capsys, "segment", bomb, "-o", tmp_path / "o.nrrd", "--model", model, "--no-progress",
            fragments=[bomb, "200x200x200", "raw", "truncated"])


def test_an_mhd_claiming_more_than_its_raw_file_holds_is_refused(capsys, tmp_path, model, monkeypatch):
    source = write(tmp_path / "a.mhd", scan())
    source.write_text(source.read_text().replace("DimSize = 12 12 12", "DimSize = 120 120 120"))
    monkeypatch.setattr(sitk, "ReadImage", lambda *a, **k: pytest.fail("pixels read"))
    refused(capsys, "segment", source, "-o", tmp_path / "o.nrrd", "--model", model, "--no-progress",
            fragments=[source, "a.raw", "truncated"])


def test_a_fifo_in_an_input_folder_is_skipped_not_waited_on(capsys, tmp_path, model, pretrain_data):
    folder = tmp_path / "scans"
    write(folder / "a.nrrd", scan())
    fifo = folder / "b.nii.gz"
    os.mkfifo(fifo)
    with FifoWatch(fifo) as watch:
        code, _, err = call(capsys, "segment", folder, "-o", tmp_path / "out", "--model", model, "--no-progress")
        assert code == 0, err
        assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.nrrd"]
        assert f"warning: {fifo}: skipped: not a regular file (a FIFO)" in err
        # pretraining: the same discovery
        data = tmp_path / "pretrain"
        shutil.copytree(pretrain_data["data"], data)
        os.mkfifo(data / "c.nii.gz")
        code, out, err = call(capsys, *pretrain_args({**pretrain_data, "data": data}, tmp_path / "run", "--steps", "1"))
        assert code == 0, err
        assert "not a regular file" in out + err
    assert not watch.opened  # nobody blocked reading the FIFO


def test_evaluate_scores_case_by_case(tmp_path, monkeypatch):
    from pgl_zoo import evaluate

    pred = labels(tmp_path / "pred", {f"c{i}": blob(i) for i in range(4)})
    gt = labels(tmp_path / "gt", {f"c{i}": blob(i + 9) for i in range(4)})
    alive: list[weakref.ref] = []
    most = []
    real = evaluate._labels

    def tracked(*args, **kwargs):
        gc.collect()
        most.append(sum(ref() is not None for ref in alive))
        array = real(*args, **kwargs)
        alive.append(weakref.ref(array))
        return array

    monkeypatch.setattr(evaluate, "_labels", tracked)
    result = evaluate.evaluate_folders(pred, gt)
    assert len(result.cases) == 4 and max(most) <= 1  # at most the same case's prediction is held


# ---------------------------------------------------------------------------------------------------------------
# 4. Errors that did not name the problem


def test_a_full_disk_while_saving_a_checkpoint_names_the_file(capsys, tmp_path, pretrain_data):
    out = tmp_path / "run"
    code, _, err = call(capsys, *pretrain_args(pretrain_data, out, "--steps", "2", "--stop-after", "1"))
    assert code == 0, err
    before = digest(out / "checkpoint.pt")
    with file_size_limit(300_000):  # the cache and logs fit, the checkpoint (~1.5 MB) does not
        code, _, err = call(capsys, "pretrain", "--out", out, "--resume")
    errors = [line for line in err.splitlines() if line.startswith("error")]
    assert code != 0 and "Traceback" not in err and len(errors) == 1, err
    assert str(out / "checkpoint.pt") in errors[0] and "File too large" in errors[0], errors[0]
    assert digest(out / "checkpoint.pt") == before
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 1


def test_a_full_disk_during_an_nnunet_export_names_the_file(capsys, tmp_path):
    target = tmp_path / "pgl-ct-tiny_nnunet.pth"
    with file_size_limit(100_000):
        refused(capsys, "--offline", "export", "pgl-ct-tiny", "--format", "nnunet", "--out", target,
                fragments=[target, "File too large", "nothing was replaced"])
    assert not target.exists() and [p.name for p in tmp_path.iterdir()] == []


def test_a_full_disk_during_a_zoo_export_names_the_weights_file(capsys, tmp_path, pretrain_data):
    run = tmp_path / "run"
    code, _, err = call(capsys, *pretrain_args(pretrain_data, run, "--steps", "1"))
    assert code == 0, err
    target = tmp_path / "exported"
    with file_size_limit(20_000):  # safetensors says "I/O error: ... (os error 27)"
        refused(capsys, "export", run, "--name", "x", "--out", target,
                fragments=[target / "model.safetensors", "File too large", "nothing was replaced"])
    assert not (target / "model.safetensors").exists()


@pytest.mark.parametrize("key, value, fragment", [("steps", "many", "steps must be a whole number"),
                                                  ("base_momentum", 2, "--momentum must be in [0, 1]")])
def test_a_hand_edited_config_json_is_named_on_resume(capsys, tmp_path, pretrain_data, key, value, fragment):
    out = tmp_path / "run"
    code, _, err = call(capsys, *pretrain_args(pretrain_data, out, "--steps", "2", "--stop-after", "1"))
    assert code == 0, err
    config = json.loads((out / "config.json").read_text())
    config[key] = value
    (out / "config.json").write_text(json.dumps(config))
    refused(capsys, "pretrain", "--out", out, "--resume", fragments=[out / "config.json", fragment])


def test_evaluate_names_the_geometry_that_differs(capsys, tmp_path):
    pred = labels(tmp_path / "pred", {"c": blob(0)})
    image = sitk.GetImageFromArray(blob(1))
    image.SetOrigin((0.0, 0.0, 30.0))
    (tmp_path / "gt").mkdir()
    sitk.WriteImage(image, str(tmp_path / "gt" / "c.nii.gz"))
    line = refused(capsys, "evaluate", "--pred", pred, "--gt", tmp_path / "gt",
                   fragments=[pred / "c.nii.gz", "origin (0, 0, 0) vs (0, 0, 30)"])
    assert "size" not in line and "spacing" not in line


def test_evaluate_labels_that_are_not_a_json_object_are_named(capsys, tmp_path):
    pred = labels(tmp_path / "pred", {"c": blob(0)})
    gt = labels(tmp_path / "gt", {"c": blob(1)})
    names = tmp_path / "names.json"
    names.write_text('["background", "liver"]')
    refused(capsys, "evaluate", "--pred", pred, "--gt", gt, "--labels", names, fragments=[names, "JSON object"])


def test_a_truncated_mhd_header_is_named_as_truncated(capsys, tmp_path, model):
    source = write(tmp_path / "a.mhd", scan())
    text = source.read_text()
    source.write_text(text[: len(text) // 2])
    line = refused(capsys, "segment", source, "-o", tmp_path / "o.nrrd", "--model", model, "--no-progress",
                   fragments=[source, "truncated"])
    assert "No such file" not in line


def test_a_fifo_given_as_input_is_not_called_missing(capsys, tmp_path, model):
    fifo = tmp_path / "scan.nii.gz"
    os.mkfifo(fifo)
    with FifoWatch(fifo) as watch:
        line = refused(capsys, "segment", fifo, "-o", tmp_path / "o.nii.gz", "--model", model, "--no-progress",
                       fragments=[fifo, "not a regular file (a FIFO)"])
    assert "no such file" not in line and not watch.opened


@pytest.mark.parametrize("args, suggestion", [(["segmnt"], "did you mean 'segment'"),
                                              (["info", "pgl-ct-tinyy"], "did you mean 'pgl-ct-tiny'"),
                                              (["evalute"], "did you mean 'evaluate'")])
def test_a_misspelt_command_or_model_gets_a_suggestion(capsys, args, suggestion):
    refused(capsys, "--offline", *args, fragments=[suggestion])
