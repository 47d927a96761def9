"""Issue 18, security: a model folder, a plans file or a checkpoint is data and never runs code.

Every case plants a command that would create a marker file if anything executed it, drives every entry
point a user has (CLI, Python API, torch.hub, nnU-Net export and plans), and asserts a one-line refusal and
that the marker never appears. The remaining classes of the bad-input matrix are in test_bad_inputs.py.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _cli import call, refused
from _seg_helpers import save_micro_encoder, save_micro_segmenter

import pgl_zoo
from pgl_zoo.arch import ALLOWED_OPS, validate_arch
from pgl_zoo.errors import PglZooError

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# (key, class name, its kwargs key, kwargs): each would run `touch MARKER` if the name were imported and called.
PAYLOADS = [
    ("nonlin", "os.system", "nonlin_kwargs", "command"),
    ("norm_op", "os.system", "norm_op_kwargs", "command"),
    ("dropout_op", "subprocess.getoutput", "dropout_op_kwargs", "cmd"),
    ("conv_op", "os.system", None, None),
]


def plant(folder: Path, marker: Path, key: str, name: str, kw_key: str | None, arg: str | None) -> Path:
    """Rewrite ``folder/card.json`` so that its arch names ``name`` for ``key`` with a marker-writing command."""
    card = json.loads((folder / "card.json").read_text())
    kwargs = card["arch"]["arch_kwargs"]
    kwargs[key] = name
    if kw_key:
        kwargs[kw_key] = {arg: f"touch {marker}"}
    (folder / "card.json").write_text(json.dumps(card))
    return folder


@pytest.fixture(scope="module")
def genuine(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("genuine")
    return {"segmenter": save_micro_segmenter(root / "seg", num_classes=2, patch=(8, 8, 8)),
            "encoder": save_micro_encoder(root / "enc", patch=(8, 8, 8))}


@pytest.fixture
def scan(tmp_path) -> Path:
    import numpy as np
    import SimpleITK as sitk

    path = tmp_path / "ct.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.full((8, 8, 8), -500, np.int16)), str(path))
    return path


@pytest.mark.parametrize("payload", PAYLOADS, ids=[p[0] for p in PAYLOADS])
def test_a_card_naming_any_callable_runs_nothing_anywhere(payload, genuine, scan, tmp_path, capsys):
    marker = tmp_path / "MARKER"
    seg = plant(shutil.copytree(genuine["segmenter"], tmp_path / "seg"), marker, *payload)
    enc = plant(shutil.copytree(genuine["encoder"], tmp_path / "enc"), marker, *payload)
    key = payload[0]
    # the CLI: segment and the nnU-Net export
    refused(capsys, "segment", scan, "-o", tmp_path / "out.nii.gz", "--model", seg, fragments=(key, "card.json"))
    refused(capsys, "export", enc, "--format", "nnunet", "--out", tmp_path / "x.pth", fragments=(key,))
    # the Python API
    with pytest.raises((PglZooError, ValueError), match=key):
        pgl_zoo.pgl_unet3d(encoder=str(enc), pretrained=False, num_classes=2)
    with pytest.raises((PglZooError, ValueError), match=key):
        pgl_zoo.load_pgl_encoder(str(enc))
    # torch.hub, as a user calls it on a local checkout
    with pytest.raises((PglZooError, ValueError), match=key):
        torch.hub.load(str(REPO), "pgl_unet3d", source="local", encoder=str(enc), pretrained=False, num_classes=2)
    assert not marker.exists()
    assert not (tmp_path / "out.nii.gz").exists() and not (tmp_path / "x.pth").exists()


def test_a_hostile_card_beside_genuine_weights_of_a_registered_name_runs_nothing(scan, tmp_path, capsys):
    """$PGL_ZOO_WEIGHTS/<registered name>/ with the genuine weights and a card naming os.system."""
    marker = tmp_path / "MARKER"
    weights = tmp_path / "weights"
    code, _, err = call(capsys, "download", "--model", "pgl-lungs-ct", "--local-dir", weights)
    assert code == 0, err
    plant(weights / "pgl-lungs-ct", marker, *PAYLOADS[0])
    os.environ["PGL_ZOO_WEIGHTS"] = str(weights)
    try:
        refused(capsys, "segment", scan, "-o", tmp_path / "out.nii.gz", "--model", "pgl-lungs-ct",
                fragments=("card.json",))
    finally:
        del os.environ["PGL_ZOO_WEIGHTS"]
    assert not marker.exists() and not (tmp_path / "out.nii.gz").exists()


def test_the_allow_list_keeps_the_zoo_working_and_refuses_other_arguments():
    arch = pgl_zoo.get_card("pgl-ct").arch
    assert validate_arch(arch) == arch  # every bundled card passes unchanged
    for kw_key, value in (("nonlin_kwargs", {"negative_slope": "0.01"}), ("nonlin_kwargs", {"command": "x"}),
                          ("norm_op_kwargs", {"eps": -1.0}), ("norm_op_kwargs", {"affine": 1}),
                          ("nonlin_kwargs", [1, 2])):
        bad = json.loads(json.dumps(arch))
        bad["arch_kwargs"][kw_key] = value
        with pytest.raises(ValueError, match=kw_key):
            validate_arch(bad)
    # nnU-Net's other spelling of the same classes is accepted
    other = json.loads(json.dumps(arch))
    other["arch_kwargs"].update(nonlin="torch.nn.modules.activation.LeakyReLU", norm_op="torch.nn.InstanceNorm3d")
    assert validate_arch(other)["arch_kwargs"]["nonlin"] == "torch.nn.modules.activation.LeakyReLU"


def test_every_allowed_keyword_is_one_the_installed_torch_class_takes():
    import inspect

    for key, classes in ALLOWED_OPS.items():
        for name, (module, kwargs) in classes.items():
            cls = getattr(torch.nn, name)
            assert cls.__module__ == f"torch.nn.modules.{module}", (key, name)
            assert set(kwargs) <= set(inspect.signature(cls.__init__).parameters), (key, name)


@pytest.mark.parametrize("change", [
    {"features_per_stage": [2000, 2000, 2000, 2000, 2000]},
    {"n_blocks_per_stage": [1, 1, 1, 1, 500]},
    {"kernel_sizes": [[3, 3, 3]] * 4 + [[99, 99, 99]]},
], ids=["widths", "blocks", "kernel"])
def test_an_oversized_arch_is_refused_before_anything_is_built(change):
    arch = json.loads(json.dumps(pgl_zoo.get_card("pgl-ct").arch))
    arch["arch_kwargs"].update(change)
    with pytest.raises(ValueError, match="bound"):
        validate_arch(arch)


def test_a_deeply_nested_card_is_one_line_naming_the_file(genuine, tmp_path, capsys):
    folder = shutil.copytree(genuine["encoder"], tmp_path / "enc")
    (folder / "card.json").write_text('{"notes": ' + "[" * 100_000 + "]" * 100_000 + "}")
    refused(capsys, "info", folder, fragments=(folder / "card.json",))


# ---- nnU-Net: the checkpoint given to --check is never unpickled, the plans name never leaves --out


class _Touch:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def plans(tmp_path_factory) -> Path:
    """The shape of an nnUNetPlans.json (the fields pgl-zoo reads), beside a dataset.json; the genuine --check
    on plans made by nnU-Net's own planner runs in tests/_nnunet_roundtrip.py."""
    root = tmp_path_factory.mktemp("plans")
    path = root / "nnUNetPlans.json"
    path.write_text(json.dumps({
        "plans_name": "nnUNetPlans", "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "configurations": {"3d_fullres": {"batch_size": 2, "patch_size": [64, 128, 128], "spacing": [3.0, 1.0, 1.0],
                                          "normalization_schemes": ["CTNormalization"], "use_mask_for_norm": [False],
                                          "data_identifier": "nnUNetPlans_3d_fullres",
                                          "architecture": {"network_class_name": "PlainConvUNet"}}}}))
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": {"background": 0, "x": 1},
                                                   "numTraining": 1, "file_ending": ".nii.gz"}))
    return path


def test_nnunet_plans_check_never_unpickles_the_checkpoint(plans, tmp_path, capsys):
    pytest.importorskip("nnunetv2")
    marker = tmp_path / "MARKER"
    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as f:
        pickle.dump({"network_weights": _Touch(marker)}, f)
    refused(capsys, "nnunet-plans", "--model", "pgl-ct-tiny", "--plans", plans, "--out", tmp_path / "out",
            "--check", evil, fragments=(evil, "weights_only"))
    assert not marker.exists()
    # the same through torch.save's zip format
    torch.save({"network_weights": {"w": torch.zeros(1)}, "x": _Touch(marker)}, evil)
    refused(capsys, "nnunet-plans", "--model", "pgl-ct-tiny", "--plans", plans, "--out", tmp_path / "out2",
            "--check", evil, fragments=(evil,))
    assert not marker.exists()


@pytest.mark.parametrize("where", ["file", "option"])
def test_a_plans_name_cannot_write_outside_out(plans, tmp_path, capsys, where):
    data = json.loads(plans.read_text())
    args = []
    if where == "file":
        data["plans_name"] = "../../escaped"
    else:
        args = ["--plans-name", "../escaped"]
    hostile = tmp_path / "in" / "nnUNetPlans.json"
    hostile.parent.mkdir()
    hostile.write_text(json.dumps(data))
    out = tmp_path / "a" / "b"
    refused(capsys, "nnunet-plans", "--model", "pgl-ct-tiny", "--plans", hostile, "--out", out, *args,
            fragments=("plans",))
    assert not list(tmp_path.rglob("escaped*"))


# ---- push: exactly the listed files


def test_a_card_whose_filename_is_a_pattern_is_refused(genuine, tmp_path, capsys):
    """The attack: weights saved as a file named '*' and the card's filename '*' (its sha256 genuine), so that
    an upload by pattern would take every file in the folder."""
    folder = shutil.copytree(genuine["encoder"], tmp_path / "m")
    (folder / "patient_scan.nii.gz").write_bytes(b"PHI")
    card = json.loads((folder / "card.json").read_text())
    for name in ("*", "model.*", "[a-z]*", ".hidden", "../x.safetensors"):
        if "/" not in name:
            (folder / card["filename"]).rename(folder / name)
        card["filename"] = name
        (folder / "card.json").write_text(json.dumps(card))
        refused(capsys, "push", folder, "--repo-id", "org/x", "--dry-run", fragments=("filename",))


def test_push_uploads_exactly_the_dry_runs_files(genuine, tmp_path):
    """Over real HTTP to the test Hub: extra files in the folder (a patient scan, a file named '*') stay home."""
    from _hub_server import HubServer

    folder = shutil.copytree(genuine["encoder"], tmp_path / "m")
    (folder / "patient_scan.nii.gz").write_bytes(b"PHI")
    (folder / "*").write_bytes(b"secret")
    server = HubServer(tmp_path / "hub", token="hf_test_token").start()
    try:
        env = dict(os.environ, HF_ENDPOINT=server.url, HF_TOKEN="hf_test_token", HF_HOME=str(tmp_path / "hf"),
                   HF_HUB_CACHE=str(tmp_path / "hf-cache"), OMP_NUM_THREADS="1")
        env.pop("HF_HUB_OFFLINE", None)
        dry = subprocess.run([sys.executable, "-m", "pgl_zoo.cli", "push", str(folder), "--repo-id", "org/m",
                              "--dry-run"], env=env, capture_output=True, text=True, timeout=120)
        assert dry.returncode == 0, dry.stderr
        listed = sorted(line.split()[2] for line in dry.stdout.splitlines() if line.startswith("would upload"))
        real = subprocess.run([sys.executable, "-m", "pgl_zoo.cli", "push", str(folder), "--repo-id", "org/m"],
                              env=env, capture_output=True, text=True, timeout=120)
        assert real.returncode == 0, real.stderr
        commit = [line.split()[1].rstrip(":") for line in real.stdout.splitlines() if line.startswith("commit ")][0]
        tree = server.state.tree("org/m", commit)
    finally:
        server.stop()
    assert listed == sorted(tree) == ["README.md", "card.json", "model.safetensors"]


# ---- weights and cards that would be silently wrong


def test_an_edited_card_beside_genuine_weights_cannot_replace_the_registered_card(scan, tmp_path, capsys):
    weights = tmp_path / "weights"
    code, _, err = call(capsys, "download", "--model", "pgl-lungs-ct", "--local-dir", weights)
    assert code == 0, err
    card_file = weights / "pgl-lungs-ct" / "card.json"
    card = json.loads(card_file.read_text())
    card["preprocessing"]["spacing_xyz_mm"] = [20.0, 20.0, 20.0]
    card["label_names"] = {"0": "background", "1": "tumour"}
    card_file.write_text(json.dumps(card))
    os.environ["PGL_ZOO_WEIGHTS"] = str(weights)
    try:
        line = refused(capsys, "segment", scan, "-o", tmp_path / "out.nii.gz", "--model", "pgl-lungs-ct",
                       fragments=(card_file, "preprocessing", "label_names"))
    finally:
        del os.environ["PGL_ZOO_WEIGHTS"]
    assert "registered" in line and not (tmp_path / "out.nii.gz").exists()


def _resave(folder: Path, change) -> Path:
    """Rewrite ``folder``'s weights through ``change(state)`` and record the new file's sha256 and size."""
    from safetensors.torch import load_file, save_file

    from pgl_zoo.hashing import sha256_file

    weights = folder / "model.safetensors"
    state = load_file(str(weights))
    save_file(change(state), str(weights))
    card = json.loads((folder / "card.json").read_text())
    card.update(sha256=sha256_file(weights), size_bytes=weights.stat().st_size)
    (folder / "card.json").write_text(json.dumps(card))
    return folder


@pytest.mark.parametrize("kind", ["nan", "inf", "int8"])
def test_weights_that_cannot_segment_are_refused(kind, genuine, scan, tmp_path, capsys):
    def change(state):
        key = sorted(state)[0]
        if kind == "int8":
            state[key] = state[key].to(torch.int8)
        else:
            state[key] = torch.full_like(state[key], float(kind))
        return state

    seg = _resave(shutil.copytree(genuine["segmenter"], tmp_path / "seg"), change)
    refused(capsys, "segment", scan, "-o", tmp_path / "out.nii.gz", "--model", seg,
            fragments=("model.safetensors", "int8" if kind == "int8" else "NaN or infinite"))
    assert not (tmp_path / "out.nii.gz").exists()


def test_a_card_without_sha256_loads_with_a_warning(genuine, tmp_path):
    enc = shutil.copytree(genuine["encoder"], tmp_path / "enc")
    card = json.loads((enc / "card.json").read_text())
    card["sha256"] = None
    (enc / "card.json").write_text(json.dumps(card))
    with pytest.warns(UserWarning, match="unverified"):
        loaded = pgl_zoo.load_pgl_encoder(str(enc))
    assert not loaded.load_report.sha256_verified


def test_a_huge_weights_file_is_refused_by_its_size_before_it_is_hashed(genuine, tmp_path):
    enc = shutil.copytree(genuine["encoder"], tmp_path / "enc")
    with open(enc / "model.safetensors", "r+b") as f:
        f.truncate(30 * 2**30)  # sparse: 30 GiB on paper, nothing on disk
    with pytest.raises(PglZooError, match="bytes, but its card records"):
        pgl_zoo.load_pgl_encoder(str(enc))
