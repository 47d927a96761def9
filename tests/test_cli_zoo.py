"""The zoo commands: list, info, download (offline, from a Hugging Face cache), push --dry-run, errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import torch
from _cli import call
from conftest import REVISION, lay_out_hf_cache

import pgl_zoo


def run_cli(*args: str, env=None):
    return subprocess.run([sys.executable, "-m", "pgl_zoo.cli", *args], capture_output=True, text=True, env=env)


def test_info_json_is_the_card(capsys):
    code, out, _ = call(capsys, "info", "pgl-ct", "--json")
    assert code == 0
    assert pgl_zoo.ModelCard.from_dict(json.loads(out)) == pgl_zoo.get_card("pgl-ct")
    code, out, _ = call(capsys, "info", "pgl-ct-large")
    assert "status: not yet published" in out and "recipe: torchrun" in out and "window" in out
    code, out, _ = call(capsys, "info", "pgl-ct")
    assert "status: bundled" in out and "LCTSC lungs" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["info", "pgl-nope"], "error: unknown model 'pgl-nope'; known models: pgl-ct, pgl-ct-large"),
        (["download", "--model", "pgl-ct-large"], "error: pgl-ct-large: weights not yet published"),
        (["push", "/nonexistent-folder", "--repo-id", "a/b", "--dry-run"], "does not exist"),
    ],
)
def test_errors_are_one_line_without_traceback(args, message):
    result = run_cli(*args)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.startswith(("error", "Error"))]) == 1


def test_download_offline_from_cache_into_a_portable_folder(saved, published_card, tmp_path, capsys, monkeypatch):
    net, folder = saved
    cache = tmp_path / "hf-cache"
    lay_out_hf_cache(cache, published_card.hub_repo_id, REVISION, {"model.safetensors": folder / "model.safetensors"})
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # restored after the test; --offline overrides it
    code, out, err = call(capsys, "--offline", "download", "--model", "test-published", "--cache-dir", str(cache),
                          "--local-dir", str(tmp_path / "usb"))
    assert code == 0, err
    assert "sha256 verified" in out
    portable = tmp_path / "usb" / "test-published"
    encoder = pgl_zoo.load_pgl_encoder(str(portable))
    for key, value in net.encoder.state_dict().items():
        assert torch.equal(encoder.state_dict()[key], value)
    assert encoder.load_report.sha256_verified


def test_download_refuses_a_corrupted_cache_entry(saved, published_card, tmp_path, capsys, monkeypatch):
    _, folder = saved
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes((folder / "model.safetensors").read_bytes()[:-1] + b"\0")
    cache = tmp_path / "hf-cache"
    lay_out_hf_cache(cache, published_card.hub_repo_id, REVISION, {"model.safetensors": bad})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, _, err = call(capsys, "download", "--model", "test-published", "--cache-dir", str(cache))
    assert code == 1 and "sha256 mismatch" in err and published_card.sha256 in err


def test_download_of_the_default_encoder_works_offline_and_prints_the_verified_path(capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, out, err = call(capsys, "download", "--model", "pgl-ct")
    assert code == 0, err
    card = pgl_zoo.get_card("pgl-ct")
    path = next(word for line in out.splitlines() for word in line.split() if word.endswith(card.filename))
    assert pgl_zoo.hashing.sha256_file(path) == card.sha256 and "sha256 verified" in out
    assert pgl_zoo.load_pgl_encoder("pgl-ct").load_report.encoder_fraction == 1.0


def test_download_all_writes_portable_folders_that_load_offline(downloaded_all, monkeypatch):
    code, out, err = downloaded_all.code, downloaded_all.out, downloaded_all.err  # run once per test run, offline
    assert code == 0, err
    assert "skip pgl-ct-large: weights not yet published" in err
    assert "pgl-ct-tiny:" in out and "pgl-ct:" in out and "sha256 verified" in out
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("PGL_ZOO_WEIGHTS", str(downloaded_all.folder / "usb"))
    encoder = pgl_zoo.load_pgl_encoder("pgl-ct-tiny")
    assert encoder.load_report.source == "$PGL_ZOO_WEIGHTS" and encoder.load_report.sha256_verified


def test_push_dry_run_cli(saved, capsys):
    _, folder = saved
    code, out, _ = call(capsys, "push", str(folder), "--repo-id", "lab/x", "--dry-run")
    assert code == 0
    assert [line.split()[2] for line in out.splitlines()] == ["model.safetensors", "card.json", "README.md"]


def test_help_lists_every_command():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("list", "info", "download", "push"):
        assert f"  {command}" in result.stdout


def _list_in_a_fresh_process(card, env) -> tuple[list[dict], str]:
    """``pgl-zoo list --json`` and ``pgl-zoo list`` with ``card`` registered; fails if torch was imported."""
    code = (
        "import json, sys\n"
        "import pgl_zoo\n"
        "from pgl_zoo.registry import register\n"
        "from pgl_zoo.cli import main\n"
        "register(pgl_zoo.ModelCard.from_dict(json.loads(sys.argv[1])))\n"
        "main(['list', '--json'])\n"
        "print('=====')\n"
        "main(['list'])\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code, card.to_json()], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    as_json, table = result.stdout.split("=====\n")
    return json.loads(as_json), table


def test_list_shows_size_place_and_result(saved, published_card, tmp_path):
    """Each place a published model's weights can be: remote only, cached, portable (first match wins)."""
    import os
    import shutil

    _, folder = saved
    card = published_card.replace(evaluation={"summary": "test value 0.5 (a fixture, not a measurement)"})
    size = (folder / "model.safetensors").stat().st_size
    assert card.size_bytes == size  # save_pretrained records it
    cache = tmp_path / "hf-cache"
    env = dict(os.environ, HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1")
    env.pop("PGL_ZOO_WEIGHTS", None)

    rows, table = _list_in_a_fresh_process(card, env)
    by_name = {r["name"]: r for r in rows}
    assert by_name["test-published"] == {
        "name": "test-published", "status": "published", "size_bytes": size, "modality": "CT",
        "weights": "remote only", "weights_path": None,
        "evaluation": "test value 0.5 (a fixture, not a measurement)", "summary": card.summary}
    assert by_name["pgl-ct-large"]["weights"] == "none" and by_name["pgl-ct-large"]["size_bytes"] is None
    tiny = pgl_zoo.get_card("pgl-ct-tiny")
    assert by_name["pgl-ct-tiny"]["weights"] == "bundled" and by_name["pgl-ct-tiny"]["size_bytes"] == tiny.size_bytes
    assert by_name["pgl-ct-tiny"]["evaluation"] is None
    lines = table.splitlines()
    assert lines[0].split() == ["NAME", "STATUS", "SIZE", "MODALITY", "WEIGHTS", "RESULT"]
    assert any(line.split()[:2] == ["pgl-ct-tiny", "bundled"] and re.search(r" bundled +not measured$", line)
               for line in lines)
    row = next(line for line in lines if line.startswith("test-published "))
    assert f"{size / 1e6:.1f} MB" in row and "remote only" in row and row.endswith("(a fixture, not a measurement)")

    snapshot = lay_out_hf_cache(cache, card.hub_repo_id, REVISION, {"model.safetensors": folder / "model.safetensors"})
    rows, _ = _list_in_a_fresh_process(card, env)
    cached = next(r for r in rows if r["name"] == "test-published")
    assert cached["weights"] == "cached" and cached["weights_path"] == str(snapshot / "model.safetensors")

    shutil.copytree(folder, tmp_path / "usb" / "test-published")
    rows, _ = _list_in_a_fresh_process(card, dict(env, PGL_ZOO_WEIGHTS=str(tmp_path / "usb")))
    portable = next(r for r in rows if r["name"] == "test-published")
    assert portable["weights"] == "portable"
    assert portable["weights_path"] == str(tmp_path / "usb" / "test-published" / "model.safetensors")


def test_info_shows_the_evaluation(capsys, published_card):
    code, out, _ = call(capsys, "info", "test-published")
    assert code == 0 and "evaluation: not measured" in out
    from pgl_zoo.registry import registered

    with registered(published_card.replace(evaluation={"summary": "test value (a fixture)", "cases": 3}),
                    replace=True):
        code, out, _ = call(capsys, "info", "test-published")
    assert code == 0 and "evaluation:\n  summary: test value (a fixture)\n  cases: 3" in out
