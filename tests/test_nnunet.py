"""nnU-Net interop: plans that match a zoo model, a checkpoint nnU-Net's own loader takes, and training.

The round trip runs nnU-Net v2's own code (fingerprint, planner, preprocessing, get_network_from_plans,
load_pretrained_weights, nnUNetTrainer) on two real chest CTs of the package's sample data.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import pgl_zoo
from pgl_zoo.errors import PglZooError
from pgl_zoo.nets import build_unet
from pgl_zoo.nnunet import export_nnunet_checkpoint, plans_configuration, write_nnunet_plans

HERE = Path(__file__).resolve().parent
TINY = pgl_zoo.get_card("pgl-ct-tiny")


def _zoo_folder(tmp_path: Path, contents=("encoder", "decoder")) -> Path:
    torch.manual_seed(1)
    net = build_unet(TINY.arch, 2)
    card = TINY.replace(name="nnunet-test", status="not yet published", sha256=None, contents=contents)
    return pgl_zoo.save_pretrained(net.state_dict(), card, tmp_path / "zoo")


def _plans(transpose=(0, 1, 2)) -> dict:
    """The shape of an nnUNetPlans.json (only the fields pgl-zoo reads or changes)."""
    return {
        "plans_name": "nnUNetPlans", "transpose_forward": list(transpose), "transpose_backward": list(transpose),
        "original_median_shape_after_transp": [100, 200, 300], "original_median_spacing_after_transp": [3.0, 1.0, 1.0],
        "foreground_intensity_properties_per_channel": {"0": {"mean": -300.0, "std": 400.0, "percentile_00_5": -1000.0,
                                                              "percentile_99_5": 1500.0}},
        "configurations": {"2d": {"batch_size": 12}, "3d_fullres": {
            "batch_size": 2, "patch_size": [64, 128, 128], "spacing": [3.0, 1.0, 1.0],
            "normalization_schemes": ["CTNormalization"], "use_mask_for_norm": [False],
            "data_identifier": "nnUNetPlans_3d_fullres", "architecture": {"network_class_name": "PlainConvUNet"}}},
    }


def test_plans_take_the_models_network_spacing_patch_and_window(tmp_path):
    plans_file = tmp_path / "nnUNetPlans.json"
    plans_file.write_text(json.dumps(_plans()))
    out = write_nnunet_plans("pgl-ct-tiny", plans_file, tmp_path)
    new = json.loads(out.read_text())
    assert out.name == "nnUNetPlans_pgl-ct-tiny.json" and new["plans_name"] == "nnUNetPlans_pgl-ct-tiny"
    config = new["configurations"]["3d_fullres"]
    assert config["architecture"] == TINY.arch
    assert config["spacing"] == list(TINY.preprocessing.spacing_xyz_mm[::-1])  # (z, y, x)
    assert config["patch_size"] == list(TINY.patch_size_zyx)
    assert config["data_identifier"] == "nnUNetPlans_pgl-ct-tiny_3d_fullres"
    assert config["median_image_size_in_voxels"] == [150, 100, 150]  # 300 mm / 2 mm, 200 mm / 2 mm, 300 mm / 2 mm
    props = new["foreground_intensity_properties_per_channel"]["0"]
    assert (props["percentile_00_5"], props["percentile_99_5"]) == TINY.preprocessing.window
    assert props["mean"] == -300.0  # nnU-Net's own statistics are kept
    assert new["configurations"]["2d"] == {"batch_size": 12} and config["batch_size"] == 2
    with pytest.raises(PglZooError, match="exists"):
        write_nnunet_plans("pgl-ct-tiny", plans_file, tmp_path)


def test_plans_follow_nnunets_axis_transposition():
    card = TINY.replace(patch_size_zyx=(16, 32, 64), preprocessing=TINY.preprocessing.__class__(
        spacing_xyz_mm=(1.0, 2.0, 3.0), window=(-1000.0, 400.0)))
    config = plans_configuration(card, _plans(transpose=(2, 0, 1)))
    assert config["patch_size"] == [64, 16, 32]  # (x, z, y)
    assert config["spacing"] == [1.0, 3.0, 2.0]


def test_checkpoint_has_every_key_of_nnunets_network_and_names_what_it_initialised(tmp_path):
    full = _zoo_folder(tmp_path / "a")
    summary = export_nnunet_checkpoint(full, tmp_path / "full.pth")
    weights = torch.load(tmp_path / "full.pth", weights_only=True)["network_weights"]
    reference = build_unet(TINY.arch, 2).state_dict()
    assert set(weights) == set(reference)  # aliases included: nnU-Net's loader asks for every key
    assert summary["initialised_by_nnunet"] == []
    encoder_only = _zoo_folder(tmp_path / "b", contents=("encoder",))
    summary = export_nnunet_checkpoint(encoder_only, tmp_path / "enc.pth")
    assert summary["initialised_by_nnunet"] and all(k.startswith("decoder.") for k in summary["initialised_by_nnunet"])
    with pytest.raises(PglZooError, match="exists"):
        export_nnunet_checkpoint(full, tmp_path / "full.pth")


@pytest.mark.slow
def test_nnunet_builds_loads_and_trains_from_the_exported_weights(tmp_path):
    pytest.importorskip("nnunetv2", reason="the nnunet extra is not installed")
    from pgl_zoo.datasets import sample_lungs_ct

    raw = tmp_path / "nnUNet_raw" / "Dataset501_Lungs"
    (raw / "imagesTr").mkdir(parents=True)
    (raw / "labelsTr").mkdir()
    sample = sample_lungs_ct()
    for image, label in sample.pairs[:2]:
        shutil.copy(image, raw / "imagesTr" / image.name)
        shutil.copy(label, raw / "labelsTr" / label.name)
    (raw / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": {"background": 0, "lungs": 1}, "numTraining": 2,
        "file_ending": ".nii.gz"}))
    model = _zoo_folder(tmp_path)
    result = subprocess.run([sys.executable, str(HERE / "_nnunet_roundtrip.py"), str(tmp_path), str(model)],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["plans_arch"] == TINY.arch and out["plans_patch"] == list(TINY.patch_size_zyx)
    assert out["plans_spacing"] == list(TINY.preprocessing.spacing_xyz_mm[::-1])
    # nnU-Net's loader copied every non-head key, and the copies are ours (not its initialisation)
    assert out["loaded"] == out["non_head_keys"] > 100 and out["changed_by_loading"] > 0
    assert out["n_features"] == 4 and out["feature_diff"] <= 1e-5
    # one iteration of nnU-Net's own trainer, from our weights, on the CPU
    assert len(out["train_losses"]) == 1 and all(abs(v) < 10 for v in out["train_losses"])
    assert out["encoder_tensors_moved_by_training"] > 0


def test_check_without_the_nnunet_extra_is_one_line(tmp_path):
    plans_file = tmp_path / "nnUNetPlans.json"
    plans_file.write_text(json.dumps(_plans()))
    (tmp_path / "dataset.json").write_text("{}")
    (tmp_path / "x.pth").write_bytes(b"")
    code = ("import sys; sys.modules['nnunetv2'] = None\n"  # as if the extra were not installed
            "from pgl_zoo.cli import main\n"
            f"main(['nnunet-plans', '--model', 'pgl-ct-tiny', '--plans', {str(plans_file)!r}, '--out', "
            f"{str(tmp_path / 'out')!r}, '--check', {str(tmp_path / 'x.pth')!r}])\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == ['error: nnunetv2 is not installed; install the extra: '
                                                  'pip install "pgl-zoo[nnunet]"']


def test_a_registered_name_is_not_taken_for_a_same_named_run_folder(tmp_path, monkeypatch):
    decoy = tmp_path / "pgl-ct-tiny"
    decoy.mkdir()
    (decoy / "checkpoint.pt").write_bytes(b"not a checkpoint")
    monkeypatch.chdir(tmp_path)
    summary = export_nnunet_checkpoint("pgl-ct-tiny", tmp_path / "tiny.pth")
    assert summary["model"] == "pgl-ct-tiny" and summary["parts"] == ["encoder", "decoder"]
    assert summary["initialised_by_nnunet"] == []
    with pytest.raises(PglZooError):  # written as a path, the folder is meant, and it is no valid run
        export_nnunet_checkpoint("./pgl-ct-tiny", tmp_path / "other.pth")
