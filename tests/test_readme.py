"""README.md's code, run as a new user would run it on a fresh clone: offline, top to bottom, in one folder.

Every fenced block of the README is classified in ``BLOCKS`` (by its first line): run, or skipped
with the reason. A new or changed block fails ``test_every_block_is_classified`` until it is
classified here. Shell commands run in order through the CLI (in this process), with the tiny
settings of ``tests/_readme.TINY`` appended (documented flags of the same command; a later flag overrides an earlier
one); optional parts written ``[--flag]`` are run with the flag. ``SKIPPED_COMMANDS`` lists the
commands inside run blocks that are not run, and why. The main job and ``download --all`` run once per test
run (the session fixtures ``main_job`` and ``downloaded_all`` of tests/conftest.py), so no test here depends on
another having run.
"""

from __future__ import annotations

import json
import os
import shlex

import pytest
from _cli import call
from _readme import MAIN_JOB, README, REPO, block, cli_args, fenced_blocks, offline_settings, shell_commands

from pgl_zoo.demo import DEFAULT_MODEL, DemoRecipe
from pgl_zoo.registry import default_encoder, get_card, list_models

RUN, SKIP, NOT_CODE = "run", "skip", "not code"
# first line of each fenced block -> (what this test does, why / where)
BLOCKS = {
    MAIN_JOB:
        (RUN, "test_main_job: the `pgl-zoo demo` part; CI (.ci/run) runs the whole line in a clean copy"),
    "# install (Python >= 3.10). Install torch (and the torchvision that matches it, needed by":
        (SKIP, "installs packages and runs this test suite: that is what CI (.ci/run) does"),
    "import torch\nimport pgl_zoo": (RUN, "test_python_api_block"),
    "import torch\n\nnet = torch.hub.load(": (RUN, "test_torch_hub_block"),
    "pgl-zoo demo --out demo/": (RUN, "test_command_line_block"),
    "nnUNetv2_plan_and_preprocess -d 501 -c 3d_fullres --verify_dataset_integrity":
        (SKIP, "needs nnU-Net's raw data set 501, its environment variables and hours of nnU-Net training; "
               "tests/test_nnunet.py runs the pgl-zoo side (plans, export, loading, one nnU-Net iteration) on "
               "the sample CTs"),
    "from pgl_zoo.datasets import sample_lungs_ct": (RUN, "test_sample_data_blocks"),
    "pgl-zoo sample-data                    # where the cases are, count, size, license":
        (RUN, "test_sample_data_blocks"),
    "python benchmarks/study_data.py --out study_data":
        (SKIP, "the transfer study reads ../shared/data (absent from a fresh clone) and runs on a GPU machine; "
               "tests/test_transfer_study.py runs its --quick path on real scans where ../shared exists"),
    "pgl-zoo sample-data --set openkbp_hn --copy-to hn/": (RUN, "test_head_and_neck_block"),
    'pip install "pgl-zoo[dicom]"':
        (SKIP, "needs a DICOM series, which a fresh clone lacks (the sample CTs are NIfTI); "
               "tests/test_dicom_output.py runs segment --format dicom-seg / rtstruct on real series from ../shared"),
    "@article{xie2020pgl,": (NOT_CODE, "the citation"),
}

# Commands inside run blocks that are not run (prefix -> reason).
SKIPPED_COMMANDS = {
    "pip install": "installs packages (CI runs it)",
    "pgl-zoo demo --out demo/": "in the command line block: the main job's line, run once by the main_job fixture",
    "pgl-zoo nnunet-plans": "needs nnUNetPlans.json from nnUNetv2_plan_and_preprocess (tests/test_nnunet.py)",
    "pgl-zoo finetune --data Task04_Hippocampus": "the MSD hippocampus set is not in a fresh clone "
                                                  "(tests/test_seg_*.py run it from ../shared)",
    "pgl-zoo --offline ...": "a pattern for the global options, not a command",
    "pgl-zoo pretrain --data hn_ct/": "a folder of the user's own head-and-neck CT; the overrides it shows run in "
                                      "tests/test_pretrain_train.py (test_intensity_overrides_...)",
}

def run_cli_commands(capsys, commands: list[str], skip: dict[str, str] = SKIPPED_COMMANDS) -> list[str]:
    """Run each ``pgl-zoo ...`` command in this process (but those in ``skip``); returns what ran."""
    ran = []
    for command in commands:
        if any(command.startswith(prefix) for prefix in skip):
            continue
        assert command.startswith("pgl-zoo "), f"not a pgl-zoo command, and not listed as skipped: {command}"
        args = cli_args(command)
        code, out, err = call(capsys, *args)
        assert code == 0, f"`{command}` (run as pgl-zoo {' '.join(args)}) failed: {err or out}"
        ran.append(command)
    return ran


@pytest.fixture
def clone(main_job):
    """The folder the README is walked in (a stand-in for a fresh clone's root: no ../shared beside it), where
    the main job ran (tests/conftest.py runs it once per test run)."""
    return main_job.folder


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path_factory):
    offline_settings(monkeypatch, tmp_path_factory.getbasetemp())


def test_every_block_is_classified():
    keys = [b.key for b in fenced_blocks(README)]
    unknown = [k for k in keys if not any(k.startswith(first) for first in BLOCKS)]
    assert not unknown, f"README blocks not classified in tests/test_readme.py BLOCKS: {unknown}"
    missing = [first for first in BLOCKS if not any(k.startswith(first) for k in keys)]
    assert not missing, f"BLOCKS entries no longer in README.md: {missing}"


def test_main_job(main_job):
    commands = shell_commands(block(next(iter(BLOCKS))).code)
    assert [c.split()[:2] for c in commands] == [["pip", "install"], ["pip", "install"], ["pgl-zoo", "demo"]]
    assert DEFAULT_MODEL in list_models()  # part (a) runs the zoo's own lung model, bundled
    assert main_job.command == commands[-1] == "pgl-zoo demo --out demo/"
    assert main_job.code == 0, f"`{main_job.command}` failed: {main_job.err or main_job.out}"
    summary = json.loads((main_job.folder / "demo" / "summary.json").read_text())
    assert summary["finetuned"]["recipe"]["steps"] == 1  # the tiny setting reached the command
    assert (main_job.folder / "demo" / "finetune" / "model").is_dir()


def test_python_api_block(clone, monkeypatch):
    monkeypatch.chdir(clone)  # the main job has run there: the block loads its run
    exec(compile(block("import torch\nimport pgl_zoo").code, "README.md (Python API)", "exec"), {})


def test_torch_hub_block(monkeypatch):
    monkeypatch.chdir(REPO)  # "in the root of a clone"
    scope: dict = {}
    exec(compile(block("import torch\n\nnet = torch.hub.load(").code, "README.md (torch.hub)", "exec"), scope)
    assert scope["net"].load_report.encoder_fraction == 1.0 and scope["enc"].load_report.sha256_verified


def test_command_line_block(clone, downloaded_all, monkeypatch, capsys):
    monkeypatch.chdir(clone)
    commands = shell_commands(block("pgl-zoo demo --out demo/").code)
    ran = run_cli_commands(capsys, commands, SKIPPED_COMMANDS | {downloaded_all.command: "run once per test run "
                                                                 "(tests/conftest.py downloaded_all)"})
    assert downloaded_all.command in commands and downloaded_all.code == 0, downloaded_all.err
    assert [c.split()[1] for c in ran] == ["list", "info", "download", "sample-data", "prepare", "pretrain",
                                           "export",
                                           "export", "push", "finetune", "segment", "evaluate"]
    assert sorted(p.name for p in (clone / "labels").glob("*.nii.gz")) == \
        [f"lung_00{i}_0000.nii.gz" for i in range(6)]


def test_the_readme_states_the_demos_recipe():
    recipe = DemoRecipe()
    line = next(c for c in shell_commands(block("pgl-zoo demo --out demo/").code)
                if c.startswith("pgl-zoo finetune --data lungs/"))
    words = shlex.split(line)
    flags = {w: words[i + 1] for i, w in enumerate(words[:-1]) if w.startswith("--")}
    assert [float(s) for s in flags["--spacing"].split(",")] == [recipe.spacing_mm] * 3
    assert tuple(int(s) for s in flags["--patch-size"].split(",")) == recipe.patch_size_zyx
    assert int(flags["--batch-size"]) == recipe.batch_size and int(flags["--epochs"]) == 1
    assert int(flags["--steps-per-epoch"]) == recipe.steps and float(flags["--lr"]) == recipe.lr
    assert flags["--normalization"] == recipe.normalization and flags["--val-cases"] == "lung_005"
    card_window = get_card(default_encoder()).preprocessing.window
    assert tuple(float(w) for w in flags["--window"].split(",")) == recipe.window if "--window" in flags \
        else recipe.window == card_window


def test_sample_data_blocks(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # a section read on its own: a fresh folder
    scope: dict = {}
    exec(compile(block("from pgl_zoo.datasets import sample_lungs_ct").code, "README.md (sample data)", "exec"),
         scope)
    assert len(scope["sample"].case_ids) == 6
    ran = run_cli_commands(capsys, shell_commands(block("pgl-zoo sample-data                    #").code))
    assert len(ran) == 3 and (tmp_path / "lungs" / "LICENSE").is_file()
    assert (tmp_path / "hn" / "structures.json").is_file() and not (tmp_path / "lungs" / "structures.json").exists()


def test_head_and_neck_block(tmp_path, monkeypatch, capsys):
    """The organ-at-risk commands on the shipped OpenKBP patients: copy, segment with a preview, evaluate on
    partial labels; each patient's per-organ Dice is the one its card records (within 0.01, the tolerance of
    tests/test_task_models.py, which checks the card on the 39 test patients)."""
    monkeypatch.chdir(tmp_path)
    skip = {**SKIPPED_COMMANDS, "pgl-zoo segment ct_series/": "needs a DICOM series, which a fresh clone lacks; "
            "tests/test_dicom_output.py runs pgl-hn-oars-ct on hn_247 written as one"}
    ran = run_cli_commands(capsys, shell_commands(block("pgl-zoo sample-data --set openkbp_hn").code), skip)
    assert len(ran) == 3
    assert sorted(p.name for p in (tmp_path / "hn_oars").glob("*.nii.gz")) == ["hn_247_0000.nii.gz",
                                                                              "hn_286_0000.nii.gz"]
    for case in ("hn_247_0000", "hn_286_0000"):  # --preview with several inputs: one picture per input
        assert (tmp_path / f"hn_oars_{case}.png").stat().st_size > 10_000
    report = json.loads((tmp_path / "hn_oars" / "evaluation.json").read_text())
    organs = [n for c, n in get_card("pgl-hn-oars-ct").label_names.items() if c != "0"]
    assert set(report["cases"]) == {"hn_247", "hn_286"}
    assert report["cases_per_class"]["dice"] == dict.fromkeys(organs, 2)  # both contour all seven
    recorded = get_card("pgl-hn-oars-ct").evaluation["sample_cases_dice"]
    assert set(recorded) == set(report["cases"])
    for case, dice in recorded.items():
        for organ in organs:
            assert report["cases"][case]["dice"][organ] == pytest.approx(dice[organ], abs=0.01), (case, organ)


def test_offline_workflow(downloaded_all, monkeypatch):
    """"Air-gapped machine": download --all --local-dir usb/, then PGL_ZOO_WEIGHTS names the folder."""
    for text in (downloaded_all.command, "export PGL_ZOO_WEIGHTS=", "HF_HUB_OFFLINE=1"):
        assert text in README, text
    usb = downloaded_all.folder / "usb"
    assert downloaded_all.code == 0, downloaded_all.err
    assert (usb / "pgl-ct-tiny" / "model.safetensors").is_file()
    monkeypatch.setenv("PGL_ZOO_WEIGHTS", str(usb))
    import pgl_zoo

    report = pgl_zoo.load_pgl_encoder("pgl-ct-tiny").load_report
    assert report.source == "$PGL_ZOO_WEIGHTS" and report.path.startswith(str(usb))
    assert os.environ["HF_HUB_OFFLINE"] == "1"
