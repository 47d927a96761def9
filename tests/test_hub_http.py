"""The Hub path end to end over real HTTP: pgl-zoo's own download and push code, huggingface_hub unpatched.

A Hub-compatible test server (tests/_hub_server.py, not the Hub) runs on 127.0.0.1 in this process;
pgl-zoo runs in a fresh process (tests/_hub_client.py) with HF_ENDPOINT pointing at the server and
HF_HUB_CACHE / HF_HOME in tmp_path, because huggingface_hub reads those variables at import.
Every request that reaches the server is recorded, so "served from the cache" is measured as
"no request arrived".
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import pytest
import torch
from _hub_server import HubServer
from safetensors.torch import load as safetensors_load

import pgl_zoo
from pgl_zoo.arch import resenc_arch
from pgl_zoo.cards import PUBLISHED
from pgl_zoo.nets import build_unet

CLIENT = Path(__file__).resolve().parent / "_hub_client.py"
REPO_ID = "pgl-test/test-hub"
TOKEN = "hf_test_token"
# More than huggingface_hub's download chunk (10 MiB): a transfer cut after the first chunk resumes
# with a Range request (bytes not yet written to disk in a whole chunk are fetched again).
BIG_ARCH = resenc_arch([32, 64, 128, 256], [1, 1, 1, 1], [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]])


@pytest.fixture(scope="module")
def big_folder(tmp_path_factory) -> Path:
    """A saved encoder-only model whose weights file (13.7 MiB) is larger than one download chunk."""
    torch.manual_seed(0)
    net = build_unet(BIG_ARCH, num_classes=2)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    card = pgl_zoo.get_card("pgl-ct-tiny").replace(name="test-hub", arch=BIG_ARCH, contents=("encoder",))
    folder = pgl_zoo.save_pretrained(net.state_dict(), card, tmp_path_factory.mktemp("big") / "test-hub")
    assert (folder / "model.safetensors").stat().st_size > 10 * 2**20
    return folder


@pytest.fixture
def hub(tmp_path):
    server = HubServer(tmp_path / "hub-storage", token=TOKEN).start()
    yield server
    if server.socket.fileno() != -1:
        server.stop()


class Published:
    """A model committed to the test server and registered (in the client process) at that commit."""

    def __init__(self, hub: HubServer, folder: Path, tmp_path: Path, name: str = "test-hub",
                 repo_id: str = REPO_ID) -> None:
        self.payload = (folder / "model.safetensors").read_bytes()
        commit = hub.state.add_files(repo_id, {f: (folder / f).read_bytes()
                                               for f in ("model.safetensors", "card.json", "README.md")})
        saved = pgl_zoo.ModelCard.from_json_file(folder / "card.json")
        self.card = saved.replace(name=name, status=PUBLISHED, hub_repo_id=repo_id, revision=commit)
        self.cards_file = tmp_path / "cards.json"
        self.cards_file.write_text(json.dumps([self.card.to_dict()]))
        self.cache = tmp_path / "hf-cache"
        self.repo_cache = self.cache / ("models--" + repo_id.replace("/", "--"))


@pytest.fixture
def published(hub, big_folder, tmp_path) -> Published:
    return Published(hub, big_folder, tmp_path)


@pytest.fixture
def env(hub, tmp_path) -> dict[str, str]:
    """A user's environment pointed at the test server, with its own cache and HF home."""
    env = dict(os.environ, HF_ENDPOINT=hub.url, HF_HUB_CACHE=str(tmp_path / "hf-cache"),
               HF_HOME=str(tmp_path / "hf-home"), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    for name in ("HF_HUB_OFFLINE", "PGL_ZOO_WEIGHTS", "HF_TOKEN", "HF_HUB_DISABLE_PROGRESS_BARS", "PGL_ZOO_DEBUG",
                 "TQDM_POSITION", "HF_HUB_DISABLE_TELEMETRY"):
        env.pop(name, None)
    return env


def run_client(env: dict, cards_file: Path, *args: str, tty_stderr: bool = False) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``_hub_client.py``; with ``tty_stderr``, stderr is a terminal
    (a pseudo-terminal), as for a user at a shell: huggingface_hub shows progress bars only there."""
    command = [sys.executable, str(CLIENT), str(cards_file), *args]
    if not tty_stderr:
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        return result.returncode, result.stdout, result.stderr
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # 24 x 120 characters
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=slave) as process:
        os.close(slave)
        reader.start()
        out, _ = process.communicate(timeout=300)
    reader.join(timeout=10)
    os.close(master)
    return process.returncode, out.decode(), b"".join(chunks).decode(errors="replace")


def resolve_requests(hub: HubServer, method: str | None = None):
    return [r for r in hub.state.requests if "/resolve/" in r.path and (method is None or r.method == method)]


def snapshot_entry(published: Published) -> Path:
    return published.repo_cache / "snapshots" / published.card.revision / "model.safetensors"


def test_first_download_shows_a_progress_bar_and_verifies_the_sha256(hub, published, env):
    code, out, err = run_client(env, published.cards_file, "cli", "download", "--model", "test-hub", tty_stderr=True)
    assert code == 0, err
    assert f"test-hub: {snapshot_entry(published)} (sha256 verified)" in out
    assert snapshot_entry(published).read_bytes() == published.payload
    # tqdm's bar on the terminal, named after the file, ending at 100 % of the file's size
    done = re.findall(r"model\.safetensors: +100%\|[^|]*\| *([\d.]+)M/([\d.]+)M", err)
    assert done and done[-1][0] == done[-1][1] == f"{len(published.payload) / 1e6:.1f}", err
    assert [r.method for r in resolve_requests(hub)] == ["HEAD", "GET"]
    assert all(f"/{REPO_ID}/resolve/{published.card.revision}/model.safetensors" == r.path
               for r in resolve_requests(hub))
    assert hub.state.unhandled == []


def test_a_cached_model_is_loaded_without_any_request(hub, published, env, tmp_path):
    code, _, err = run_client(env, published.cards_file, "cli", "download", "--model", "test-hub")
    assert code == 0, err
    assert len(resolve_requests(hub, "GET")) == 1
    # a day later: huggingface_hub would fetch its agent registry again before any call it makes
    registry = tmp_path / "hf-home" / ".agent_harnesses.json"
    if registry.exists():
        os.utime(registry, (time.time() - 2 * 86400,) * 2)
    before = len(hub.state.requests)
    code, out, err = run_client(env, published.cards_file, "cli", "download", "--model", "test-hub")
    assert code == 0 and "(sha256 verified)" in out, err
    code, out, err = run_client(env, published.cards_file, "download", "test-hub")
    assert code == 0 and out.strip() == str(snapshot_entry(published)), err
    code, out, err = run_client(env, published.cards_file, "load", "test-hub")
    assert code == 0, err
    report = json.loads(out)
    assert report["source"] == "huggingface" and report["sha256_verified"] and report["complete"]
    assert report["encoder_fraction"] == 1.0 and report["sha256"] == published.card.sha256
    assert hub.state.requests[before:] == []


def test_an_interrupted_download_is_resumed_with_a_range_request(hub, published, env):
    from huggingface_hub.constants import DOWNLOAD_CHUNK_SIZE  # written to disk a whole chunk at a time

    size = len(published.payload)
    cut = DOWNLOAD_CHUNK_SIZE + 2**20  # the connection drops one MiB after the first whole chunk
    assert cut < size
    hub.state.cut_once["model.safetensors"] = cut
    code, out, err = run_client(env, published.cards_file, "cli", "download", "--model", "test-hub")
    assert code == 0 and "(sha256 verified)" in out, err
    gets = resolve_requests(hub, "GET")
    assert [g.range is None for g in gets] == [True, False]
    start = int(re.fullmatch(r"bytes=(\d+)-", gets[1].range).group(1))
    assert 0 < start <= cut  # resumed where the written part ended, not from byte 0
    assert snapshot_entry(published).read_bytes() == published.payload
    assert not list(published.cache.rglob("*.incomplete"))


def test_a_corrupted_download_is_refused_and_nothing_stays_in_the_cache(hub, published, env):
    hub.state.corrupt.add("model.safetensors")  # the right size and headers, one byte changed
    code, out, err = run_client(env, published.cards_file, "cli", "download", "--model", "test-hub")
    assert code == 1 and out == ""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    bad = bytearray(published.payload)
    bad[len(bad) // 2] ^= 0xFF
    assert lines[0].startswith(f"error: {REPO_ID}@{published.card.revision}/model.safetensors (")
    assert f"sha256 mismatch (expected {published.card.sha256}, got {hashlib.sha256(bad).hexdigest()})" in lines[0]
    assert "removed it from the Hugging Face cache" in lines[0]
    assert not os.path.lexists(snapshot_entry(published))
    assert [p for p in (published.repo_cache / "blobs").iterdir()] == []
    assert not list(published.cache.rglob("*.incomplete"))
    # the bad copy did not poison the cache: once the server is right, the next attempt downloads it
    hub.state.corrupt.clear()
    code, out, err = run_client(env, published.cards_file, "cli", "download", "--model", "test-hub")
    assert code == 0 and "(sha256 verified)" in out, err
    assert len(resolve_requests(hub, "GET")) == 2


def test_the_cache_serves_offline_after_the_server_is_gone(hub, published, env):
    code, _, err = run_client(env, published.cards_file, "cli", "download", "--model", "test-hub")
    assert code == 0, err
    hub.stop()
    for extra in ({"HF_HUB_OFFLINE": "1"}, {}):  # offline mode, and a pinned cached file without it
        code, out, err = run_client(dict(env, **extra), published.cards_file, "load", "test-hub")
        assert code == 0, err
        report = json.loads(out)
        assert report["source"] == "huggingface" and report["path"] == str(snapshot_entry(published))
        assert report["sha256_verified"] and report["complete"] and report["encoder_fraction"] == 1.0
    code, out, err = run_client(env, published.cards_file, "cli", "--offline", "download", "--model", "test-hub")
    assert code == 0 and "(sha256 verified)" in out, err


def test_an_uncached_model_with_the_server_gone_is_a_one_line_error(hub, published, env):
    hub.stop()
    code, out, err = run_client(dict(env, HF_HUB_OFFLINE="1"), published.cards_file, "cli", "download",
                                "--model", "test-hub")
    assert code == 1 and err.strip() == (
        f"error: test-hub: {REPO_ID}@{published.card.revision} is not in the Hugging Face cache and offline mode "
        "is on; run `pgl-zoo download --model test-hub` on a connected machine")


def test_push_writes_the_layout_that_download_reads(hub, saved, env, tmp_path):
    _, folder = saved
    (tmp_path / "none.json").write_text("[]")
    code, out, err = run_client(dict(env, HF_TOKEN=TOKEN), tmp_path / "none.json", "cli", "push", str(folder),
                                "--repo-id", "pgl-test/pushed")
    assert code == 0, err
    commit = re.search(r"^commit ([0-9a-f]{40}): (\S+)$", out, re.M)
    assert commit and commit.group(2) == f"{hub.url}/pgl-test/pushed/commit/{commit.group(1)}", out
    tree = hub.state.tree("pgl-test/pushed", commit.group(1))
    assert sorted(tree) == ["README.md", "card.json", "model.safetensors"]
    for name, content in tree.items():
        assert content == (folder / name).read_bytes(), name
    writes = [r for r in hub.state.requests if r.method == "POST"]
    assert [r.path for r in writes] == ["/api/repos/create", "/api/validate-yaml",
                                        "/api/models/pgl-test/pushed/preupload/main",
                                        "/api/models/pgl-test/pushed/commit/main"]
    assert all(r.authorization == f"Bearer {TOKEN}" for r in writes)
    assert hub.state.unhandled == []
    # the commit printed by push is what a card pins; the pushed card.json is the folder's own
    pushed = pgl_zoo.ModelCard.from_dict(json.loads(tree["card.json"]))
    card = pushed.replace(name="test-pushed", status=PUBLISHED, hub_repo_id="pgl-test/pushed",
                          revision=commit.group(1))
    (tmp_path / "pushed.json").write_text(json.dumps([card.to_dict()]))
    code, out, err = run_client(env, tmp_path / "pushed.json", "load", "test-pushed")
    assert code == 0, err
    report = json.loads(out)
    assert report["source"] == "huggingface" and report["sha256_verified"] and report["complete"]
    assert report["encoder_fraction"] == 1.0
    assert report["sha256"] == hashlib.sha256(tree["model.safetensors"]).hexdigest()
    assert sorted(report["loaded"]) == sorted(safetensors_load(tree["model.safetensors"]))
