"""Bad input through the CLI: one clear line on stderr naming the file, a non-zero exit, no traceback."""

from __future__ import annotations

import gzip
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from _seg_helpers import save_micro_encoder, save_micro_segmenter


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PGL_ZOO_DEBUG"}
    return subprocess.run([sys.executable, "-m", "pgl_zoo.cli", *args], capture_output=True, text=True,
                          timeout=300, env=env)


def _one_error_line(run: subprocess.CompletedProcess, *fragments: str) -> str:
    assert run.returncode != 0
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def _write(path: Path, array: np.ndarray, origin=(0.0, 0.0, 0.0)) -> Path:
    image = sitk.GetImageFromArray(array)
    image.SetOrigin(origin)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return path


@pytest.fixture(scope="module")
def encoder(tmp_path_factory) -> Path:
    return save_micro_encoder(tmp_path_factory.mktemp("enc") / "micro", patch=(8, 8, 8))


def _dataset(root: Path, label_value: int = 1, label_origin=(0.0, 0.0, 0.0)) -> Path:
    image = np.random.default_rng(0).normal(size=(8, 8, 8)).astype(np.float32)
    label = np.zeros((8, 8, 8), np.uint8)
    label[2:5, 2:5, 2:5] = label_value
    for name in ("a", "b"):
        _write(root / "imagesTr" / f"{name}.nii.gz", image)
        _write(root / "labelsTr" / f"{name}.nii.gz", label, origin=label_origin if name == "b" else (0, 0, 0))
    return root


def _finetune(data: Path, encoder: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return _cli("finetune", "--data", str(data), "--encoder", str(encoder), "--num-classes", "2", "--out", str(out),
                "--epochs", "1", "--steps-per-epoch", "1", "--no-progress", *extra)


def test_mismatched_label_geometry(tmp_path, encoder):
    data = _dataset(tmp_path / "d", label_origin=(0.0, 3.0, 0.0))
    _one_error_line(_finetune(data, encoder, tmp_path / "run"), "labelsTr/b.nii.gz", "imagesTr/b.nii.gz",
                    "geometry")


def test_label_value_not_below_num_classes(tmp_path, encoder):
    data = _dataset(tmp_path / "d", label_value=2)
    _one_error_line(_finetune(data, encoder, tmp_path / "run"), "labelsTr/", ".nii.gz: label value 2")


def test_empty_data_folder(tmp_path, encoder):
    (tmp_path / "d" / "imagesTr").mkdir(parents=True)
    (tmp_path / "d" / "labelsTr").mkdir()
    _one_error_line(_finetune(tmp_path / "d", encoder, tmp_path / "run"), str(tmp_path / "d"), "no labelled cases")
    _one_error_line(_finetune(tmp_path / "nothing", encoder, tmp_path / "run"), "no such file or folder")


def test_two_dimensional_image(tmp_path, encoder):
    flat = _write(tmp_path / "flat.nii.gz", np.zeros((1, 16, 16), np.float32))
    model = save_micro_segmenter(tmp_path / "model", num_classes=2)
    _one_error_line(_cli("segment", str(flat), "-o", str(tmp_path / "o.nii.gz"), "--model", str(model)),
                    "flat.nii.gz", "not a 3D volume")
    data = _dataset(tmp_path / "d")
    _write(data / "imagesTr" / "a.nii.gz", np.zeros((1, 8, 8), np.float32))
    _one_error_line(_finetune(data, encoder, tmp_path / "run"), "imagesTr/a.nii.gz", "not a 3D volume")


def test_truncated_file(tmp_path, encoder):
    source = _write(tmp_path / "whole.nii.gz", np.random.default_rng(0).normal(size=(20, 20, 20)).astype(np.float32))
    raw = gzip.decompress(source.read_bytes())
    truncated = tmp_path / "cut.nii.gz"
    truncated.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    model = save_micro_segmenter(tmp_path / "model", num_classes=2)
    line = _one_error_line(_cli("segment", str(truncated), "-o", str(tmp_path / "o.nii.gz"), "--model", str(model)),
                           "cut.nii.gz")
    assert "truncated" in line or "cannot be read" in line
    data = _dataset(tmp_path / "d")
    whole = (data / "labelsTr" / "a.nii.gz").read_bytes()
    (data / "labelsTr" / "a.nii.gz").write_bytes(whole[: len(whole) // 2])
    line = _one_error_line(_finetune(data, encoder, tmp_path / "run"), "labelsTr/a.nii.gz")
    assert "truncated" in line or "cannot be read" in line


def test_evaluate_reports_missing_and_extra_predictions(tmp_path):
    label = np.zeros((6, 6, 6), np.uint8)
    label[1:4, 1:4, 1:4] = 1
    for name in ("a", "b"):
        _write(tmp_path / "gt" / f"{name}.nii.gz", label)
    _write(tmp_path / "pred" / "a.nrrd", label)  # same case, other format
    _write(tmp_path / "pred" / "z.nii.gz", label)
    run = _cli("evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"), "--out",
               str(tmp_path / "report"))
    _one_error_line(run, "1 missing prediction", ": b;", "1 extra prediction", ": z")
    assert "missing prediction" in run.stdout and "extra prediction" in run.stdout
    import json

    report = json.loads((tmp_path / "report.json").read_text())
    assert report["missing_predictions"] == ["b"] and report["extra_predictions"] == ["z"]
    assert report["mean"]["dice"]["mean"] == 1.0
    assert (tmp_path / "report.csv").read_text().startswith("case,status,dice_class_1")
    ok = _cli("evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"), "--allow-missing")
    assert ok.returncode == 0, ok.stderr


def test_evaluate_pairs_predictions_named_like_nnunet_images_with_their_labels(tmp_path):
    """`segment imagesTr/` writes CASE_0000.nii.gz; the label of that case is labelsTr/CASE.nii.gz."""
    from pgl_zoo.evaluate import pair_files

    label = np.zeros((6, 6, 6), np.uint8)
    for name in ("lung_000", "lung_001", "case_0000"):
        _write(tmp_path / "gt" / f"{name}.nii.gz", label)
    for name in ("lung_000_0000", "lung_001", "case_0000", "other_0000"):
        _write(tmp_path / "pred" / f"{name}.nii.gz", label)
    pairs, missing, extra = pair_files(tmp_path / "pred", tmp_path / "gt")
    assert {k: (p.name, g.name) for k, (p, g) in pairs.items()} == {
        "lung_000": ("lung_000_0000.nii.gz", "lung_000.nii.gz"),
        "lung_001": ("lung_001.nii.gz", "lung_001.nii.gz"),
        "case_0000": ("case_0000.nii.gz", "case_0000.nii.gz"),  # an exact name wins
    }
    assert missing == [] and extra == ["other_0000"]


@pytest.mark.parametrize("command", ["finetune", "segment", "evaluate"])
def test_help_documents_every_option(command):
    run = _cli(command, "--help")
    assert run.returncode == 0
    helps = option_help(run.stdout)
    assert len(helps) > 3 and "--help" in helps
    assert [option for option, text in helps.items() if not text] == []  # a metavar or [default] is no help


def option_help(help_page: str) -> dict[str, str]:
    """Each option of a click --help page (by its last name) -> its help text, without the option's names, its
    metavar and click's own notes ([default: ...], [required], ranges)."""
    helps: dict[str, str] = {}
    option = None
    for line in help_page.split("Options:\n", 1)[1].splitlines():
        if line.startswith("  -"):  # "  -o, --out PATH   Help ..." (help on the next lines when the names are long)
            names, _, text = line.strip().partition("  ")
            option = names.split(", ")[-1].split(" ")[0]
            helps[option] = text
        elif option and line.strip():
            helps[option] += " " + line.strip()
    return {name: re.sub(r"\[[^\]]*\]", "", text).strip() for name, text in helps.items()}
