"""The bad-input and fault matrix of issue 12: each case a hostile or careless user (or a full disk, a
scheduler, a second process) can produce. Every case must end in one clear line on stderr naming the
file and the problem, a non-zero exit, no traceback and nothing already written touched; or, for the
faults a run can survive, in a warning and a correct result.

Categories (the README's "Bad input and faults" counts these tests): data lost or overwritten,
silently wrong results, resources, runs and concurrency, defects found by reading the code.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import json
import os
import signal
import struct
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from _cli import call, refused
from _seg_helpers import DATA_DIR, MICRO_ARCH, save_micro_encoder, save_micro_segmenter, write_micro_pretrain_set

import pgl_zoo
from pgl_zoo.cards import Preprocessing
from pgl_zoo.registry import get_card, registered

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write(path: Path, array: np.ndarray, compress: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path), compress)
    return path


def scan(seed: int = 0, shape=(12, 12, 12)) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1, shape).astype(np.float32)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return save_micro_segmenter(tmp_path_factory.mktemp("model") / "m", num_classes=2, patch=(8, 8, 8))


@pytest.fixture(scope="module")
def encoder(tmp_path_factory) -> Path:
    return save_micro_encoder(tmp_path_factory.mktemp("enc") / "micro", patch=(8, 8, 8))


def dataset(root: Path, image: np.ndarray | None = None) -> Path:
    label = np.zeros((8, 8, 8), np.uint8)
    label[2:5, 2:5, 2:5] = 1
    for i, name in enumerate(("a", "b", "c")):
        write(root / "imagesTr" / f"{name}.nii.gz", image if image is not None and i == 0 else scan(i, (8, 8, 8)))
        write(root / "labelsTr" / f"{name}.nii.gz", label)
    return root


def finetune_args(data: Path, encoder: Path, out: Path, *extra) -> list:
    return ["finetune", "--data", data, "--encoder", encoder, "--num-classes", "2", "--out", out, "--epochs", "1",
            "--steps-per-epoch", "1", "--batch-size", "1", "--val-cases", "c", "--no-progress", *extra]


# ---------------------------------------------------------------------------------------------------------------
# 1. Data lost or overwritten


def test_segment_onto_its_own_input_file_is_refused(capsys, tmp_path, model):
    source = write(tmp_path / "a.nrrd", scan())
    before = digest(source)
    refused(capsys, "segment", source, "-o", source, "--model", model, "--no-progress", fragments=[source, "input"])
    assert digest(source) == before


def test_segment_into_the_input_folder_is_refused(capsys, tmp_path, model):
    folder = tmp_path / "scans"
    files = [write(folder / f"{n}.nrrd", scan(i)) for i, n in enumerate("ab")]
    before = [digest(f) for f in files]
    refused(capsys, "segment", folder, "-o", folder, "--model", model, "--no-progress", fragments=[folder])
    assert [digest(f) for f in files] == before and sorted(p.name for p in folder.iterdir()) == ["a.nrrd", "b.nrrd"]


@pytest.mark.parametrize("names", [("a/case.nrrd", "b/case.nrrd"), ("x.nii", "x.nii.gz")])
def test_inputs_sharing_an_output_name_are_refused_before_any_work(capsys, tmp_path, model, names, monkeypatch):
    inputs = [write(tmp_path / "in" / name, scan(i)) for i, name in enumerate(names)]
    monkeypatch.setattr("pgl_zoo.api.load_segmentation_model", lambda *a, **k: pytest.fail("model loaded"))
    out = tmp_path / "out"
    refused(capsys, "segment", *inputs, "-o", out, "--model", model, "--no-progress",
            fragments=[inputs[0], inputs[1], "both"])
    assert not out.exists()


def test_a_failed_label_write_never_replaces_a_good_file(capsys, tmp_path, model, monkeypatch):
    """ITK does not report a write cut short by a full disk: simulate it (the file ends up truncated)."""
    source = write(tmp_path / "a.nrrd", scan())
    out = tmp_path / "label.nii.gz"
    code, _, err = call(capsys, "segment", source, "-o", out, "--model", model, "--no-progress")
    assert code == 0, err
    good = digest(out)
    real_write = sitk.WriteImage

    def full_disk(image, path, *args):
        real_write(image, path, *args)
        size = os.path.getsize(path)
        with open(path, "r+b") as handle:
            handle.truncate(size // 2)

    monkeypatch.setattr(sitk, "WriteImage", full_disk)
    refused(capsys, "segment", source, "-o", out, "--model", model, "--no-progress", "--overwrite",
            fragments=[out, "write failed"])
    assert digest(out) == good
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def test_export_into_an_existing_model_folder_needs_overwrite(capsys, tmp_path, pretrain_run, model):
    target = tmp_path / "existing"
    target.mkdir()
    for name in ("model.safetensors", "card.json"):
        (target / name).write_bytes((model / name).read_bytes())
    before = {p.name: digest(p) for p in target.iterdir()}
    refused(capsys, "export", pretrain_run, "--name", "x", "--out", target, fragments=[target, "--overwrite"])
    assert {p.name: digest(p) for p in target.iterdir()} == before
    code, _, err = call(capsys, "export", pretrain_run, "--name", "x", "--out", target, "--overwrite")
    assert code == 0, err
    code, _, err = call(capsys, "export", pretrain_run, "--name", "x", "--out", target)
    assert code == 0, err  # an earlier export of the same run is only refreshed


def test_finetune_into_a_folder_that_is_not_a_run_needs_overwrite(capsys, tmp_path, encoder, model):
    data = dataset(tmp_path / "data")
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    (out / "model.safetensors").write_bytes((model / "model.safetensors").read_bytes())
    before = {p.name: digest(p) for p in out.iterdir()}
    refused(capsys, *finetune_args(data, encoder, out), fragments=[out, "--overwrite"])
    assert {p.name: digest(p) for p in out.iterdir() if p.name != ".lock"} == before


def test_download_local_dir_over_a_users_folder_needs_overwrite(capsys, tmp_path):
    mine = tmp_path / "usb" / "pgl-ct-tiny"
    mine.mkdir(parents=True)
    (mine / "card.json").write_text('{"my": "own file"}')
    refused(capsys, "--offline", "download", "--model", "pgl-ct-tiny", "--local-dir", tmp_path / "usb",
            fragments=[mine, "--overwrite"])
    assert (mine / "card.json").read_text() == '{"my": "own file"}'
    # an earlier copy of the same weights may be refreshed without --overwrite
    code, _, err = call(capsys, "--offline", "download", "--model", "pgl-ct-tiny", "--local-dir", tmp_path / "b")
    assert code == 0, err
    code, _, err = call(capsys, "--offline", "download", "--model", "pgl-ct-tiny", "--local-dir", tmp_path / "b")
    assert code == 0, err


# ---------------------------------------------------------------------------------------------------------------
# 2. Silently wrong results


@pytest.mark.parametrize("suffix, bad", [(".nrrd", np.nan), (".mha", np.inf)])
def test_a_non_finite_voxel_is_refused_by_segment(capsys, tmp_path, model, suffix, bad):
    array = scan()
    array[3, 4, 5] = bad
    source = write(tmp_path / f"a{suffix}", array)
    refused(capsys, "segment", source, "-o", tmp_path / "out.nii.gz", "--model", model, "--no-progress",
            fragments=[source, "NaN or infinite"])
    assert not (tmp_path / "out.nii.gz").exists()


def test_a_nan_voxel_is_refused_by_finetune(capsys, tmp_path, encoder):
    image = scan(0, (8, 8, 8))
    image[1, 1, 1] = np.nan
    data = dataset(tmp_path / "data", image)
    refused(capsys, *finetune_args(data, encoder, tmp_path / "run"), fragments=["a.nii.gz", "NaN"])


def test_a_non_finite_loss_stops_finetuning(capsys, tmp_path, encoder, monkeypatch):
    from pgl_zoo.finetune import trainer

    monkeypatch.setattr(trainer.DiceCELoss, "forward",
                        lambda self, logits, labels, labelled=None: logits.sum() * float("nan"))
    data = dataset(tmp_path / "data")
    line = refused(capsys, *finetune_args(data, encoder, tmp_path / "run"), fragments=["loss became nan"])
    assert str(tmp_path / "run") in line
    assert not (tmp_path / "run" / "model").exists()


def test_an_unevenly_spaced_dicom_series_is_refused(capsys, tmp_path, model):
    series = DATA_DIR / "ct" / "tiny_dicom"
    if not series.is_dir():
        pytest.skip(f"{series} is absent")
    refused(capsys, "segment", series, "-o", tmp_path / "out.nii.gz", "--model", model, "--no-progress",
            fragments=[series, "non-uniform slice spacing"])


@pytest.mark.parametrize("value, dtype, extra, fragment", [
    (-1, np.int16, [], "negative label value -1"),
    (0.5, np.float32, [], "fractional label value 0.5"),
    (3, np.uint8, ["--num-classes", "2"], "not below --num-classes 2"),
    (2_000_000_000, np.int32, [], "pass --num-classes"),
])
def test_evaluate_refuses_impossible_labels(capsys, tmp_path, value, dtype, extra, fragment):
    gt = np.zeros((6, 6, 6), np.uint8)
    gt[2:4, 2:4, 2:4] = 1
    pred = gt.astype(dtype)
    pred[0, 0, 0] = value
    write(tmp_path / "gt" / "c.nii.gz", gt)
    bad = write(tmp_path / "pred" / "c.nii.gz", pred)
    refused(capsys, "evaluate", "--pred", tmp_path / "pred", "--gt", tmp_path / "gt", *extra, fragments=[bad, fragment])
    assert not (tmp_path / "pred" / "evaluation.csv").exists()


@pytest.mark.parametrize("change, named", [(["--lr", "0.5"], "lr: run 0.001 vs now 0.5"), ("data", "data: run")])
def test_finetune_resume_with_other_options_is_refused(capsys, tmp_path, encoder, change, named):
    data = dataset(tmp_path / "data")
    out = tmp_path / "run"
    code, _, err = call(capsys, *finetune_args(data, encoder, out))
    assert code == 0, err
    before = digest(out / "checkpoints" / "last.pt")
    if change == "data":
        args = finetune_args(dataset(tmp_path / "other"), encoder, out, "--resume", "--epochs", "2")
    else:
        args = finetune_args(data, encoder, out, "--resume", "--epochs", "2", *change)
    refused(capsys, *args, fragments=["cannot resume", named])
    assert digest(out / "checkpoints" / "last.pt") == before
    code, _, err = call(capsys, *finetune_args(data, encoder, out, "--resume", "--epochs", "2"))
    assert code == 0, err  # more epochs may be asked for


def test_stop_after_is_not_carried_into_later_resumes(capsys, tmp_path, pretrain_data):
    out = tmp_path / "run"
    code, _, err = call(capsys, *pretrain_args(pretrain_data, out, "--steps", "3", "--stop-after", "1"))
    assert code == 0, err
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 1
    code, _, err = call(capsys, "pretrain", "--out", out, "--resume")
    assert code == 0, err
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 3  # not 2: --stop-after 1 was not kept


def test_download_says_verified_only_when_a_digest_was_checked(capsys, tmp_path, monkeypatch):
    card = get_card("pgl-ct-tiny").replace(name="test-nosha", sha256=None)
    folder = tmp_path / "weights" / "test-nosha"
    pgl_zoo.save_pretrained(pgl_zoo.pgl_unet3d(2, encoder="pgl-ct-tiny", pretrained=False).state_dict(), card,
                            folder)
    data = json.loads((folder / "card.json").read_text())
    data["sha256"] = None
    (folder / "card.json").write_text(json.dumps(data))
    monkeypatch.setenv("PGL_ZOO_WEIGHTS", str(tmp_path / "weights"))
    with registered(card.replace(status="published", hub_repo_id="x/y", revision="0" * 40)):
        code, out, err = call(capsys, "--offline", "download", "--model", "test-nosha")
    assert code == 0, err
    assert "sha256 verified" not in out and "NOT verified" in out


# ---------------------------------------------------------------------------------------------------------------
# 3. Resources


def _nifti_header(size_xyz, datatype=4, bitpix=16) -> bytes:
    header = bytearray(348)
    struct.pack_into("<i", header, 0, 348)
    struct.pack_into("<8h", header, 40, 3, *size_xyz, 1, 1, 1, 1)
    struct.pack_into("<hh", header, 70, datatype, bitpix)
    struct.pack_into("<8f", header, 76, 1, 1, 1, 1, 1, 1, 1, 1)
    struct.pack_into("<f", header, 108, 352.0)
    header[344:348] = b"n+1\0"
    return bytes(header) + b"\0" * 4


def test_a_tiny_file_claiming_a_huge_volume_is_refused_before_reading(capsys, tmp_path, model, monkeypatch):
    bomb = tmp_path / "bomb.nii.gz"
    bomb.write_bytes(gzip.compress(_nifti_header((1450, 1450, 1450)), 9))
    assert bomb.stat().st_size < 100
    monkeypatch.setattr(sitk, "ReadImage", lambda *a, **k: pytest.fail("pixels read (6 GB allocated)"))
    refused(capsys, "segment", bomb, "-o", tmp_path / "out.nii.gz", "--model", model, "--no-progress",
            fragments=[bomb, "1450x1450x1450"])


def test_the_voxel_limit_is_checked_before_reading(tmp_path, monkeypatch):
    from pgl_zoo.errors import ImageReadError
    from pgl_zoo.imaging.read import read_image

    source = write(tmp_path / "a.nrrd", scan())
    monkeypatch.setenv("PGL_ZOO_MAX_VOXELS", "1000")
    with pytest.raises(ImageReadError, match="more than the limit 1,000"):
        read_image(source)


# ---------------------------------------------------------------------------------------------------------------
# 4. Runs and concurrency


@pytest.fixture(scope="module")
def pretrain_data(tmp_path_factory) -> dict:
    return write_micro_pretrain_set(tmp_path_factory.mktemp("pretrain"))


def pretrain_args(p: dict, out: Path, *extra) -> list:
    return ["pretrain", "--data", p["data"], "--out", out, "--model", p["card"], "--batch-size", "2",
            "--workers", "0", "--cache-dir", p["cache"], "--checkpoint-every", "1", *extra]


@pytest.fixture(scope="module")
def pretrain_run(tmp_path_factory, pretrain_data) -> Path:
    from pgl_zoo.pretrain.cli import pretrain_cmd

    out = tmp_path_factory.mktemp("run") / "run"
    pretrain_cmd.main([str(a) for a in pretrain_args(pretrain_data, out, "--steps", "2")[1:]], standalone_mode=False)
    return out


def test_a_second_writer_of_a_run_is_refused(capsys, tmp_path, encoder, pretrain_data):
    from pgl_zoo.runs import RunLock

    data = dataset(tmp_path / "data")
    out = tmp_path / "ft"
    code, _, err = call(capsys, *finetune_args(data, encoder, out))
    assert code == 0, err
    before = digest(out / "checkpoints" / "last.pt")
    with RunLock(out):  # another process writing the run
        refused(capsys, *finetune_args(data, encoder, out, "--resume", "--epochs", "2"),
                fragments=[out, "another process"])
    assert digest(out / "checkpoints" / "last.pt") == before
    run = tmp_path / "pt"
    with RunLock(run):
        refused(capsys, *pretrain_args(pretrain_data, run, "--steps", "1"), fragments=[run, "another process"])
    # the lock is an flock: held by an open file description, never stale after a crash
    fd = os.open(out / ".lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)


def test_finetune_checkpoints_leave_no_shared_temporary_name(capsys, tmp_path, encoder, monkeypatch):
    data = dataset(tmp_path / "data")
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / ".last.pt.tmp").mkdir()  # what a concurrent writer's temporary file would block
    code, _, err = call(capsys, *finetune_args(data, encoder, out, "--overwrite"))
    assert code == 0, err
    assert (out / "checkpoints" / "last.pt").is_file()


def test_a_partial_last_metrics_line_is_skipped_on_resume(capsys, tmp_path, pretrain_data, encoder):
    out = tmp_path / "run"
    code, _, err = call(capsys, *pretrain_args(pretrain_data, out, "--steps", "3", "--stop-after", "2"))
    assert code == 0, err
    with open(out / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 3, "loss": 0.')  # a crash in the middle of a line
    code, _, err = call(capsys, "export", out, "--name", "x", "--out", tmp_path / "exported")
    assert code == 0, err  # export reads the metrics too
    code, out_text, err = call(capsys, "pretrain", "--out", out, "--resume")
    assert code == 0, err
    assert "partial last line" in out_text + err
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    # fine-tuning: the same
    data = dataset(tmp_path / "data")
    ft = tmp_path / "ft"
    code, _, err = call(capsys, *finetune_args(data, encoder, ft))
    assert code == 0, err
    with open(ft / "metrics.jsonl", "a") as handle:
        handle.write('{"epoch": 2, "tra')
    code, _, err = call(capsys, *finetune_args(data, encoder, ft, "--resume", "--epochs", "2"))
    assert code == 0, err
    assert [json.loads(line)["epoch"] for line in (ft / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_a_truncated_config_json_is_named(capsys, tmp_path, pretrain_data):
    out = tmp_path / "run"
    code, _, err = call(capsys, *pretrain_args(pretrain_data, out, "--steps", "2", "--stop-after", "1"))
    assert code == 0, err
    text = (out / "config.json").read_text()
    (out / "config.json").write_text(text[: len(text) // 2])
    refused(capsys, "pretrain", "--out", out, "--resume", fragments=[out / "config.json", "truncated"])


def test_sigterm_checkpoints_like_ctrl_c(tmp_path, pretrain_data):
    import subprocess
    import sys
    import time

    run = tmp_path / "run"
    args = pretrain_args(pretrain_data, run, "--steps", "1000", "--checkpoint-every", "0")
    proc = subprocess.Popen([sys.executable, "-m", "pgl_zoo.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    metrics = run / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 2):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)  # what a scheduler sends before it kills a job
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    logged = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    assert 2 <= ckpt["step"] < 1000 and ckpt["step"] == logged[-1]


def test_dangling_links_and_link_loops_in_a_pretraining_folder_are_skipped(tmp_path, pretrain_data):
    from pgl_zoo.pretrain.data import prepare_volumes

    folder = tmp_path / "data"
    folder.mkdir()
    for name in ("case0.nii.gz", "case1.nii.gz"):
        (folder / name).symlink_to(pretrain_data["data"] / name)
    (folder / "gone.nii.gz").symlink_to(tmp_path / "nowhere.nii.gz")
    (folder / "loop.nii.gz").symlink_to(folder / "loop.nii.gz")
    warnings: list[str] = []
    prep = Preprocessing(spacing_xyz_mm=None, window=(-1024.0, 325.0), normalization="zscore")
    data = prepare_volumes(folder, prep, cache_dir=tmp_path / "cache", warn=warnings.append)
    assert len(data.volumes) == 2
    assert {Path(s).name for s, _ in data.skipped} == {"gone.nii.gz", "loop.nii.gz"}
    assert len(warnings) == 2


def test_a_full_cache_disk_falls_back_to_no_cache(tmp_path, pretrain_data, monkeypatch):
    import errno

    from pgl_zoo.pretrain import cache as cache_module
    from pgl_zoo.pretrain import data as data_module

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    from pgl_zoo import runs

    monkeypatch.setattr(cache_module, "atomic_write", no_space)  # the arrays
    monkeypatch.setattr(runs, "atomic_write", no_space)  # the JSON records (runs.atomic_write_json)
    warnings: list[str] = []
    prep = Preprocessing(spacing_xyz_mm=None, window=(-1024.0, 325.0), normalization="zscore")
    data = data_module.prepare_volumes(pretrain_data["data"], prep, cache_dir=tmp_path / "cache",
                                       warn=warnings.append)
    assert len(data.volumes) == 2 and all(v.load().shape == v.shape_zyx for v in data.volumes)
    assert len(warnings) == 1 and "No space left" in warnings[0] and "without a cache" in warnings[0]


@pytest.mark.parametrize("filename", ["../outside.safetensors", "/etc/passwd", "sub/model.safetensors"])
def test_a_cards_filename_must_stay_inside_its_folder(capsys, tmp_path, model, filename):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes((model / "model.safetensors").read_bytes())
    card = json.loads((model / "card.json").read_text())
    card["filename"] = filename
    (folder / "card.json").write_text(json.dumps(card))
    refused(capsys, "segment", write(tmp_path / "a.nrrd", scan()), "-o", tmp_path / "o.nii.gz", "--model", folder,
            "--no-progress", fragments=[folder / "card.json", "inside"])


def test_a_state_dict_mismatch_names_the_keys(capsys, tmp_path, encoder):
    data = dataset(tmp_path / "data")
    out = tmp_path / "run"
    code, _, err = call(capsys, *finetune_args(data, encoder, out))
    assert code == 0, err
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    key = next(iter(state["model"]))
    del state["model"][key]
    torch.save(state, out / "checkpoints" / "last.pt")
    refused(capsys, *finetune_args(data, encoder, out, "--resume", "--epochs", "2"),
            fragments=["last.pt", "1 missing key(s)", key])


# ---------------------------------------------------------------------------------------------------------------
# 5. Defects found by reading the code


def test_layer_decay_gives_the_documented_learning_rates():
    from pgl_zoo.finetune.param_groups import layer_decay_groups
    from pgl_zoo.nets import build_unet

    net = build_unet(MICRO_ARCH, num_classes=2)
    groups = layer_decay_groups(net, lr=1.0, layer_decay=0.5)
    n = MICRO_ARCH["arch_kwargs"]["n_stages"]
    by_name = {g["name"]: g["lr"] for g in groups}
    assert by_name == {"encoder.stem": 0.5 ** (n + 1), **{f"encoder.stage{i}": 0.5 ** (n - i) for i in range(n)},
                       "decoder+head": 1.0}
    assert sum(len(g["params"]) for g in groups) == len(list(net.parameters()))


def test_resume_without_a_checkpoint_is_refused(capsys, tmp_path, encoder):
    data = dataset(tmp_path / "data")
    out = tmp_path / "run"
    refused(capsys, *finetune_args(data, encoder, out, "--resume"), fragments=["no checkpoint to resume from"])
    assert not (out / "metrics.jsonl").exists()


def test_pretrain_stores_the_card_path_absolute(tmp_path, pretrain_run, pretrain_data, monkeypatch):
    ckpt = torch.load(pretrain_run / "checkpoint.pt", weights_only=True)
    assert Path(ckpt["card_file"]).is_absolute()
    monkeypatch.chdir(pretrain_data["card"].parent)
    from pgl_zoo.pretrain.cli import pretrain_cmd

    out = tmp_path / "rel"
    args = pretrain_args({**pretrain_data, "card": "./card.json"}, out, "--steps", "1")[1:]
    pretrain_cmd.main([str(a) for a in args], standalone_mode=False)
    monkeypatch.chdir(tmp_path)
    from pgl_zoo.pretrain.export import export_run

    assert (export_run(out, "x", tmp_path / "exported") / "card.json").is_file()


def test_a_registered_name_is_not_shadowed_by_a_folder_in_the_working_directory(capsys, tmp_path, monkeypatch):
    fake = tmp_path / "pgl-ct-tiny"
    fake.mkdir()
    (fake / "card.json").write_text(get_card("pgl-ct-tiny").replace(summary="IMPOSTOR").to_json())
    monkeypatch.chdir(tmp_path)
    code, out, err = call(capsys, "info", "pgl-ct-tiny")
    assert code == 0 and "IMPOSTOR" not in out, err
    code, out, err = call(capsys, "info", "./pgl-ct-tiny")  # an explicit path form means the folder
    assert code == 0 and "IMPOSTOR" in out, err
    encoder = pgl_zoo.load_pgl_encoder("pgl-ct-tiny")
    assert encoder.load_report.sha256_verified and encoder.load_report.source == "bundled"


def test_atomic_write_never_changes_the_umask(tmp_path, monkeypatch):
    from pgl_zoo.atomic import atomic_write

    umask = int(next(line for line in open("/proc/self/status") if line.startswith("Umask:")).split()[1], 8)
    monkeypatch.setattr(os, "umask", lambda *a: pytest.fail("os.umask called (not thread-safe)"))
    path = atomic_write(tmp_path / "f.txt", lambda tmp: Path(tmp).write_text("x"))
    assert path.read_text() == "x" and (path.stat().st_mode & 0o777) == 0o666 & ~umask
