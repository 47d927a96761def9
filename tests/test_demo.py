"""``pgl-zoo demo``, the main job: outputs on the input's exact grid, Dice as the files say, clean refusals.

The demo's quality bar (fine-tuned Dice >= 0.90 within 5 minutes) is checked by ``.ci/run``, which runs
the full recipe; here the parts run with a micro lung model and a 2-step fine-tuning, and every number
the demo reports is recomputed from the files it wrote.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from _cli import call
from _seg_helpers import micro_lung_model, save_micro_segmenter

from pgl_zoo.datasets import sample_lungs_ct
from pgl_zoo.demo import (
    DEFAULT_MODEL,
    FINETUNED_LABELS,
    OUTPUTS,
    PREVIEW,
    RUN_DIR,
    SUMMARY,
    TEST_CASE,
    TRAIN_CASES,
    ZOO_LABELS,
    DemoConfig,
    run_demo,
)
from pgl_zoo.runs import RunLock


def expected_dice(label_file: Path, expert_file: Path) -> float:
    """Dice of label 1 against the expert's lungs, from the files, with numpy only."""
    prediction = sitk.GetArrayFromImage(sitk.ReadImage(str(label_file))) == 1
    expert = sitk.GetArrayFromImage(sitk.ReadImage(str(expert_file))) > 0
    return 2 * np.logical_and(prediction, expert).sum() / (prediction.sum() + expert.sum())


def geometry(image: sitk.Image) -> tuple:
    return image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection()


@pytest.fixture(scope="module")
def lung_model(tmp_path_factory) -> Path:
    return micro_lung_model(tmp_path_factory.mktemp("models") / "micro-lungs")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, lung_model):
    out = tmp_path_factory.mktemp("demo") / "out"
    summary = run_demo(DemoConfig(out=out, model=str(lung_model), steps=2, progress=False))
    return out, summary


def test_both_label_maps_lie_on_the_input_grid_and_their_dice_is_what_the_files_give(demo_run):
    out, summary = demo_run
    sample = sample_lungs_ct()
    image_file, expert_file = dict(zip(sample.case_ids, sample.pairs, strict=True))[TEST_CASE]
    reference = sitk.ReadImage(str(image_file))
    for part, name in (("zoo_model", ZOO_LABELS), ("finetuned", FINETUNED_LABELS)):
        label = sitk.ReadImage(str(out / name))
        assert geometry(label) == geometry(reference), part  # exact: size, spacing, origin, direction
        assert summary[part]["label_map"] == name
        assert summary[part]["dice"] == pytest.approx(expected_dice(out / name, expert_file), abs=1e-4), part
    assert json.loads((out / SUMMARY).read_text()) == json.loads(json.dumps(summary))
    assert summary["test_case"] == TEST_CASE and summary["finetuned"]["train_cases"] == list(TRAIN_CASES)
    assert TEST_CASE not in summary["finetuned"]["train_cases"]
    assert summary["finetuned"]["recipe"]["steps"] == 2


def test_the_finetuned_network_trained_on_the_training_cases_only_and_is_usable_by_segment(demo_run, capsys):
    out, summary = demo_run
    run = out / RUN_DIR
    config = json.loads((run / "config.json").read_text())
    assert config["train_cases"] == list(TRAIN_CASES) and config["val_cases"] == [TEST_CASE]
    assert config["epochs"] == 1 and config["steps_per_epoch"] == 2  # one epoch: nothing chosen on lung_005
    assert config["encoder"] == summary["finetuned"]["encoder"]
    sample = sample_lungs_ct()
    image_file = dict(zip(sample.case_ids, sample.pairs, strict=True))[TEST_CASE][0]
    code, _, err = call(capsys, "segment", image_file, "-o", out.parent / "again.nii.gz", "--model", run / "model",
                        "--no-progress")
    assert code == 0, err
    again = sitk.GetArrayFromImage(sitk.ReadImage(str(out.parent / "again.nii.gz")))
    assert np.array_equal(again, sitk.GetArrayFromImage(sitk.ReadImage(str(out / FINETUNED_LABELS))))


def test_the_preview_shows_expert_and_both_predictions(demo_run):
    import matplotlib.image

    out, _ = demo_run
    png = matplotlib.image.imread(str(out / PREVIEW))
    height, width = png.shape[:2]
    assert height > 0.85 * width  # three rows (expert, (a), (b)) of three slices; --fast draws two (below)
    assert png[..., :3].std() > 0.05  # not blank
    yellow = (png[..., 0] > 0.8) & (png[..., 1] > 0.8) & (png[..., 2] < 0.3)
    assert yellow.sum() > 100  # the expert outline drawn over the predictions


def test_fast_overwrite_replaces_only_the_demos_outputs(demo_run, lung_model, tmp_path, capsys):
    out = shutil.copytree(demo_run[0], tmp_path / "out")  # a copy: the shared run stays whole for the other tests
    (out / "notes.txt").write_text("mine")
    code, _, err = call(capsys, "demo", "--out", out, "--model", lung_model, "--fast", "--quiet")
    assert code == 1 and "folder is not empty" in err and "--overwrite" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    code, stdout, err = call(capsys, "demo", "--out", out, "--model", lung_model, "--fast", "--overwrite")
    assert code == 0, err
    summary = json.loads((out / SUMMARY).read_text())
    assert "finetuned" not in summary and not (out / FINETUNED_LABELS).exists() and not (out / RUN_DIR).exists()
    assert (out / "notes.txt").read_text() == "mine"
    import matplotlib.image

    height, width = matplotlib.image.imread(str(out / PREVIEW)).shape[:2]
    assert height < 0.75 * width  # two rows: expert and (a)
    printed = re.search(r"\(a\) zoo model .*Dice ([0-9.]+) against the expert label", stdout)
    assert printed and float(printed.group(1)) == pytest.approx(summary["zoo_model"]["dice"], abs=6e-4)
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == \
        sorted({ZOO_LABELS, PREVIEW, SUMMARY, "notes.txt"})


def test_an_unavailable_model_is_one_line_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = call(capsys, "demo", "--out", out, "--model", "no-such-model")
    assert code == 1 and err.startswith("error: part (a): the lung model 'no-such-model' is not available")
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and "--model" in err
    assert not out.exists()


def test_a_model_without_a_lung_class_is_refused(tmp_path, capsys):
    other = save_micro_segmenter(tmp_path / "organs", num_classes=3, spacing=(6.0, 6.0, 6.0), modality="CT")
    code, _, err = call(capsys, "demo", "--out", tmp_path / "out", "--model", other, "--fast")
    assert code == 1 and "has no lung class" in err and "1=c1" in err


def test_a_second_writer_is_refused(tmp_path, lung_model, capsys):
    out = tmp_path / "out"
    with RunLock(out):
        code, _, err = call(capsys, "demo", "--out", out, "--model", lung_model, "--fast")
    assert code == 1 and "another process is writing" in err and len(err.strip().splitlines()) == 1
    assert [p.name for p in out.iterdir()] == [".lock"]


def test_help_documents_every_option_and_output(capsys):
    code, stdout, _ = call(capsys, "demo", "--help")
    assert code == 0
    for text in ("--out", "--model", "--encoder", "--fast", "--steps", "--overwrite", "--device", "--quiet",
                 DEFAULT_MODEL, *OUTPUTS, "lung_000..lung_004", TEST_CASE, "mm", "window"):
        assert text in stdout, text
