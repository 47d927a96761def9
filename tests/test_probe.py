"""The frozen-encoder linear probe: its function, finetune --freeze-encoder, and segmenting with the result."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from _cli import call
from _seg_helpers import HIPPOCAMPUS, MICRO_ARCH, first_cases, hippocampus_subset, save_micro_encoder
from safetensors.torch import load_file

from pgl_zoo.nets import build_probe

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_probe_is_one_linear_map_of_all_stages_brought_to_the_input_grid():
    torch.manual_seed(0)
    probe = build_probe(MICRO_ARCH, num_classes=3).eval()
    for conv in probe.head:
        torch.nn.init.normal_(conv.weight)
    x = torch.randn(2, 1, 8, 16, 16)  # a multiple of the stride: no padding
    with torch.no_grad():
        features = probe.encoder(x)
        stacked = torch.cat([F.interpolate(f, size=x.shape[2:], mode="trilinear", align_corners=False)
                             for f in features], dim=1)
        weight = torch.cat([conv.weight for conv in probe.head], dim=1)
        expected = F.conv3d(stacked, weight, probe.head[0].bias)
        assert torch.allclose(probe(x), expected, atol=1e-5)
        # any size: padded at the far end, cropped back, voxel (0, 0, 0) aligned
        odd = torch.randn(1, 1, 7, 13, 11)
        assert probe(odd).shape == (1, 3, 7, 13, 11)


@pytest.mark.skipif(not HIPPOCAMPUS.is_dir(), reason=f"real data folder {HIPPOCAMPUS} is absent")
@pytest.mark.parametrize("start", ["pretrained", "none"])
def test_finetune_freeze_encoder_trains_the_head_only_and_the_model_segments(start, tmp_path, capsys):
    names = first_cases(3)
    data = hippocampus_subset(tmp_path / "data", names)
    encoder = save_micro_encoder(tmp_path / "enc", seed=7)
    args = ["finetune", "--data", data, "--num-classes", 3, "--out", tmp_path / "run", "--freeze-encoder",
            "--val-cases", names[2], "--epochs", 1, "--steps-per-epoch", 3, "--batch-size", 2, "--patch-size",
            "16,16,16", "--spacing", "native", "--window", "none", "--lr", "0.05", "--no-progress"]
    args += ["--encoder", encoder] if start == "pretrained" else ["--encoder", "none", "--arch", encoder]
    code, out, err = call(capsys, *args)
    assert code == 0, err
    model = tmp_path / "run" / "model"
    card = json.loads((model / "card.json").read_text())
    assert card["architecture"] == "nnunet-resenc-linear-probe" and card["contents"] == ["encoder", "head"]
    trained = load_file(str(model / "model.safetensors"))
    assert {k.split(".")[0] for k in trained} == {"encoder", "head"}
    if start == "pretrained":  # the encoder is the zoo file's, bit for bit
        original = load_file(str(encoder / "model.safetensors"))
        assert all(torch.equal(trained[k], original[k]) for k in trained if k.startswith("encoder."))
    # the head moved away from its initialisation (same seed, same init: rebuild it)
    torch.manual_seed(0)
    fresh = build_probe(MICRO_ARCH, 3)
    assert any(not torch.equal(trained[f"head.{k}"], v) for k, v in fresh.head.state_dict().items())
    image = next((data / "imagesTr").iterdir())
    code, _, err = call(capsys, "segment", image, "-o", tmp_path / "label.nii.gz", "--model", tmp_path / "run",
                        "--no-progress")
    assert code == 0, err
    assert (tmp_path / "label.nii.gz").is_file()
    code, _, err = call(capsys, "export", model, "--format", "nnunet", "--out", tmp_path / "x.pth")
    assert code != 0 and "linear-probe" in err and "Traceback" not in err
