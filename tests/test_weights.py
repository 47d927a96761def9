"""Weights round-trip bit-identically from every source, checksums are enforced, load reports are right."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import REVISION, lay_out_hf_cache, trained_unet
from safetensors.torch import load_file, save_file

import pgl_zoo
from pgl_zoo import hashing, publish, sources
from pgl_zoo import weights as W
from pgl_zoo.atomic import default_file_mode
from pgl_zoo.nets import build_unet, unique_state_dict


def _assert_encoder_equal(encoder, net):
    own = encoder.state_dict()
    ref = net.encoder.state_dict()
    assert list(own) == list(ref)
    for key in own:
        assert torch.equal(own[key], ref[key]), key


def test_saved_folder_layout_and_file_contents(saved):
    net, folder = saved
    assert sorted(os.listdir(folder)) == ["README.md", "card.json", "model.safetensors"]
    for name in os.listdir(folder):  # readable by others, as a shared or installed folder must be
        assert (folder / name).stat().st_mode & 0o777 == default_file_mode()
    card = json.loads((folder / "card.json").read_text())
    assert card["sha256"] == W.sha256_file(folder / "model.safetensors")
    tensors = load_file(str(folder / "model.safetensors"))
    assert all(k.startswith("encoder.") for k in tensors)  # the card's contents: encoder only
    for key, value in tensors.items():
        assert torch.equal(value, net.state_dict()[key])
    readme = (folder / "README.md").read_text()
    assert readme.startswith("---\nlicense: cc-by-4.0\nlibrary_name: pgl-zoo\n")  # the card says CC BY 4.0
    assert card["sha256"] in readme and "load_pgl_encoder" in readme


def test_load_from_explicit_file_and_folder(saved):
    net, folder = saved
    for source in (folder, folder / "model.safetensors"):
        encoder = pgl_zoo.load_pgl_encoder("pgl-ct-tiny", weights=source)
        _assert_encoder_equal(encoder, net)
        report = encoder.load_report
        assert report.sha256_verified and report.complete and report.encoder_fraction == 1.0
    # a saved folder can also be named directly
    _assert_encoder_equal(pgl_zoo.load_pgl_encoder(str(folder)), net)


def test_load_from_hf_cache_offline(saved, published_card, tmp_path):
    net, folder = saved
    cache = tmp_path / "hf-cache"
    lay_out_hf_cache(cache, published_card.hub_repo_id, REVISION, {"model.safetensors": folder / "model.safetensors"})
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        encoder = pgl_zoo.load_pgl_encoder("test-published", cache_dir=cache)
    finally:
        del os.environ["HF_HUB_OFFLINE"]
    _assert_encoder_equal(encoder, net)
    assert encoder.load_report.source == "huggingface"
    assert str(cache) in encoder.load_report.path


def test_hf_cache_in_a_fresh_process_with_hf_env(saved, published_card, tmp_path):
    """HF_HUB_OFFLINE and HF_HUB_CACHE set before import, as a user on an air-gapped machine would."""
    net, folder = saved
    cache = tmp_path / "hf-cache"
    lay_out_hf_cache(cache, published_card.hub_repo_id, REVISION, {"model.safetensors": folder / "model.safetensors"})
    code = (
        "import json, sys, torch, pgl_zoo\n"
        "from pgl_zoo.registry import register\n"
        "register(pgl_zoo.ModelCard.from_dict(json.loads(sys.argv[1])))\n"
        "enc = pgl_zoo.load_pgl_encoder('test-published')\n"
        "print(enc.load_report.path)\n"
        "torch.save(enc.state_dict(), sys.argv[2])\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache))
    out = tmp_path / "state.pt"
    result = subprocess.run([sys.executable, "-c", code, published_card.to_json(), str(out)], env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert str(cache) in result.stdout
    state = torch.load(out, weights_only=True)
    for key, value in net.encoder.state_dict().items():
        assert torch.equal(state[key], value)


def test_offline_and_not_in_cache_is_a_clear_error(published_card, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(pgl_zoo.WeightsNotAvailableError, match="not in the Hugging Face cache and offline"):
        pgl_zoo.load_pgl_encoder("test-published", cache_dir=tmp_path / "empty")


def test_load_from_bundled_location(saved, published_card, monkeypatch, tmp_path):
    net, folder = saved
    bundled = tmp_path / "bundled"
    shutil.copytree(folder, bundled / published_card.name)
    monkeypatch.setattr(sources, "BUNDLED_DIR", bundled)
    encoder = pgl_zoo.load_pgl_encoder(published_card.name)
    assert encoder.load_report.source == "bundled" and encoder.load_report.sha256_verified
    _assert_encoder_equal(encoder, net)


def test_load_from_portable_folder_env(saved, published_card, monkeypatch, tmp_path):
    net, folder = saved
    shutil.copytree(folder, tmp_path / "usb" / published_card.name)
    monkeypatch.setenv("PGL_ZOO_WEIGHTS", str(tmp_path / "usb"))
    encoder = pgl_zoo.load_pgl_encoder(published_card.name)
    assert encoder.load_report.source == "$PGL_ZOO_WEIGHTS" and encoder.load_report.sha256_verified
    _assert_encoder_equal(encoder, net)


def test_one_flipped_byte_is_refused(saved):
    _, folder = saved
    path = folder / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    expected = json.loads((folder / "card.json").read_text())["sha256"]
    with pytest.raises(pgl_zoo.ChecksumError) as info:
        pgl_zoo.load_pgl_encoder("pgl-ct-tiny", weights=folder)
    message = str(info.value)
    assert str(path) in message and expected in message and W.sha256_file(path) in message


def test_unpublished_card_refuses_pretrained_and_never_returns_random_weights():
    with pytest.raises(pgl_zoo.WeightsNotAvailableError, match="pgl-ct-large: weights not yet published"):
        pgl_zoo.load_pgl_encoder("pgl-ct-large")
    with pytest.raises(pgl_zoo.WeightsNotAvailableError):
        pgl_zoo.pgl_unet3d(3, encoder="pgl-ct-large")


def test_unet_load_report_names_decoder_and_head_as_not_from_weights(saved):
    net, folder = saved
    seg = pgl_zoo.pgl_unet3d(4, encoder=str(folder))
    report = seg.load_report
    assert report.encoder_fraction == 1.0 and report.complete
    assert set(report.not_from_weights) == {k for k in unique_state_dict(seg) if not k.startswith("encoder.")}
    assert any(k.startswith("decoder.stages.") for k in report.not_from_weights)
    assert "decoder.seg_layers.2.weight" in report.not_from_weights
    x = torch.randn(1, 1, 16, 16, 16)
    encoder = pgl_zoo.load_pgl_encoder(str(folder)).eval()
    with torch.no_grad():
        for a, b in zip(encoder(x), seg.eval().forward_features(x)[0], strict=True):
            assert torch.equal(a, b)


def test_decoder_is_loaded_when_the_file_has_one(tmp_path):
    net = trained_unet(1)
    card = pgl_zoo.get_card("pgl-ct-tiny").replace(contents=("encoder", "decoder"))
    folder = pgl_zoo.save_pretrained(net.state_dict(), card, tmp_path / "with-decoder")
    seg = pgl_zoo.pgl_unet3d(5, encoder=str(folder))
    assert set(seg.load_report.not_from_weights) == {k for k in unique_state_dict(seg) if ".seg_layers." in k}
    for key, value in unique_state_dict(net).items():
        if key.startswith(("decoder.stages.", "decoder.transpconvs.")):
            assert torch.equal(seg.state_dict()[key], value)


def test_in_channels_adaptation_is_reported(saved):
    _, folder = saved
    seg = pgl_zoo.pgl_unet3d(2, encoder=str(folder), in_channels=3)
    assert seg.encoder.stem.convs[0].conv.weight.shape[1] == 3
    assert seg.load_report.adapted and seg.load_report.encoder_fraction == 1.0


def test_strict_loading_refuses_a_file_for_another_architecture(tmp_path):
    net = build_unet(pgl_zoo.get_card("pgl-ct-tiny").arch, 2)
    state = {k: v.clone() for k, v in unique_state_dict(net).items() if k.startswith("encoder.")}
    state["encoder.stages.3.blocks.0.conv1.conv.weight"] = torch.zeros(1, 1, 1, 1, 1)
    del state["encoder.stages.3.blocks.0.conv2.conv.weight"]
    save_file(state, str(tmp_path / "odd.safetensors"))
    with pytest.raises(pgl_zoo.LoadError, match="missing: 1.*mismatched: 1"):
        pgl_zoo.load_pgl_encoder("pgl-ct-tiny", weights=tmp_path / "odd.safetensors")
    loose = pgl_zoo.load_pgl_encoder("pgl-ct-tiny", weights=tmp_path / "odd.safetensors", strict=False)
    sizes = {k: v.numel() for k, v in unique_state_dict(net.encoder).items()}
    lost = sizes["stages.3.blocks.0.conv1.conv.weight"] + sizes["stages.3.blocks.0.conv2.conv.weight"]
    assert loose.load_report.encoder_fraction == pytest.approx(1 - lost / sum(sizes.values()))
    assert not loose.load_report.sha256_verified  # a bare file has no recorded digest


def test_pickle_weights_are_refused(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"a": torch.zeros(1)}, path)
    with pytest.raises(pgl_zoo.LoadError, match="only .safetensors"):
        pgl_zoo.load_pgl_encoder("pgl-ct-tiny", weights=path)


def test_push_dry_run_lists_files_and_touches_no_network(saved):
    _, folder = saved
    result = pgl_zoo.push_to_hub(folder, "my-lab/pgl-test", dry_run=True)
    assert [f["file"] for f in result["files"]] == ["model.safetensors", "card.json", "README.md"]
    assert result["files"][0]["sha256"] == json.loads((folder / "card.json").read_text())["sha256"]


def test_push_refuses_a_corrupted_folder(saved):
    _, folder = saved
    (folder / "model.safetensors").write_bytes(b"\0" * 64)
    with pytest.raises(pgl_zoo.ChecksumError):
        pgl_zoo.push_to_hub(folder, "my-lab/pgl-test", dry_run=True)


def test_save_is_atomic_an_interrupted_save_keeps_the_old_file(saved, monkeypatch):
    net, folder = saved
    before = (folder / "model.safetensors").read_bytes()

    def broken_save(tensors, path, metadata=None):
        with open(path, "wb") as handle:
            handle.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(publish, "save_file", broken_save)
    with pytest.raises(KeyboardInterrupt):
        pgl_zoo.save_pretrained(trained_unet(3).state_dict(), pgl_zoo.get_card("pgl-ct-tiny"), folder)
    assert (folder / "model.safetensors").read_bytes() == before
    assert sorted(os.listdir(folder)) == ["README.md", "card.json", "model.safetensors"]
    _assert_encoder_equal(pgl_zoo.load_pgl_encoder(str(folder)), net)


def test_portable_folder_must_hold_the_registered_weights(saved, published_card, monkeypatch, tmp_path):
    """A folder in $PGL_ZOO_WEIGHTS whose card and file were both replaced is caught by the registry digest."""
    other = pgl_zoo.save_pretrained(trained_unet(7).state_dict(), published_card, tmp_path / "usb" / "test-published")
    monkeypatch.setenv("PGL_ZOO_WEIGHTS", str(tmp_path / "usb"))
    with pytest.raises(pgl_zoo.ChecksumError, match="registered with " + published_card.sha256):
        pgl_zoo.load_pgl_encoder("test-published")
    assert (other / "model.safetensors").is_file()


def test_saving_the_same_weights_twice_gives_the_same_digest(tmp_path):
    state = trained_unet(5).state_dict()
    card = pgl_zoo.get_card("pgl-ct-tiny")
    digests = {json.loads((pgl_zoo.save_pretrained(state, card, tmp_path / str(i)) / "card.json").read_text())["sha256"]
               for i in range(4)}
    assert len(digests) == 1


def test_resolution_order_the_earlier_place_wins(saved, published_card, monkeypatch, tmp_path):
    """The same registered weights in every place: explicit path > $PGL_ZOO_WEIGHTS > bundled > HF cache.

    ``sources.locate`` (what ``pgl-zoo list`` shows) names the same place as ``resolve_weights`` uses.
    """
    _, folder = saved
    name = published_card.name
    cache = tmp_path / "hf-cache"
    snapshot = lay_out_hf_cache(cache, published_card.hub_repo_id, REVISION,
                                {"model.safetensors": folder / "model.safetensors"})
    monkeypatch.setattr(sources, "BUNDLED_DIR", tmp_path / "bundled")
    bundled = shutil.copytree(folder, tmp_path / "bundled" / name)
    portable = shutil.copytree(folder, tmp_path / "usb" / name)
    explicit = shutil.copytree(folder, tmp_path / "explicit")
    monkeypatch.setenv("PGL_ZOO_WEIGHTS", str(tmp_path / "usb"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def used(**kwargs):
        found = W.resolve_weights(name, cache_dir=cache, **kwargs)
        return found.source, found.path

    assert used(weights=explicit) == ("local folder", explicit / "model.safetensors")
    assert used() == ("$PGL_ZOO_WEIGHTS", portable / "model.safetensors")
    assert sources.locate(published_card, cache_dir=cache).place == "portable"
    monkeypatch.delenv("PGL_ZOO_WEIGHTS")
    assert used() == ("bundled", bundled / "model.safetensors")
    assert sources.locate(published_card, cache_dir=cache).place == "bundled"
    shutil.rmtree(bundled)
    assert used() == ("huggingface", snapshot / "model.safetensors")
    assert sources.locate(published_card, cache_dir=cache) == sources.Location("cached", snapshot / "model.safetensors")
    shutil.rmtree(cache)
    assert sources.locate(published_card, cache_dir=cache).place == "remote only"


def test_hub_weights_are_hashed_once(saved, published_card, monkeypatch, tmp_path):
    """Downloading, loading or copying weights from the Hugging Face cache hashes their bytes once (when found,
    before anything is deserialised), not once more by each step after it."""
    _, folder = saved
    name, cache = published_card.name, tmp_path / "hf-cache"
    snapshot = lay_out_hf_cache(cache, published_card.hub_repo_id, REVISION,
                                {"model.safetensors": folder / "model.safetensors"})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hashed = []
    original = hashing.sha256_file

    def counting(path):
        hashed.append(str(path))
        return original(path)

    for module in (hashing, W, publish):
        monkeypatch.setattr(module, "sha256_file", counting)
    assert W.download(name, cache_dir=cache) == snapshot / "model.safetensors"
    assert hashed == [str(snapshot / "model.safetensors")]
    hashed.clear()
    encoder = pgl_zoo.load_pgl_encoder(name, cache_dir=cache)
    assert encoder.load_report.sha256_verified and encoder.load_report.sha256 == published_card.sha256
    assert hashed == [str(snapshot / "model.safetensors")]
    hashed.clear()
    copy = publish.portable_copy(name, tmp_path / "usb", cache_dir=cache)
    assert copy == tmp_path / "usb" / name / "model.safetensors" and copy.read_bytes() == snapshot.joinpath(
        "model.safetensors").read_bytes()
    assert hashed == [str(snapshot / "model.safetensors")]


def test_new_weights_do_not_inherit_the_base_cards_evaluation(tmp_path):
    """A fine-tuned export starts without the base card's measured result, which describes other weights."""
    from pgl_zoo.finetune.export import export_segmentation_model

    base = pgl_zoo.get_card("pgl-ct-tiny").replace(evaluation={"summary": "test value 0.5 (a fixture)"})
    folder = export_segmentation_model(trained_unet(2).state_dict(), base, 2, tmp_path / "seg")
    card = pgl_zoo.ModelCard.from_json_file(folder / "card.json")
    assert card.evaluation is None and card.size_bytes == (folder / "model.safetensors").stat().st_size
