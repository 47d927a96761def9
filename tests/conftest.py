"""Shared fixtures: the real data folder and a Hugging Face cache laid out as huggingface_hub lays it out."""

from __future__ import annotations

import importlib.util
import locale
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from _cli import call_captured
from _readme import MAIN_JOB, block, cli_args, offline_settings, shell_commands
from _seg_helpers import DATA_DIR  # noqa: E402 - the one data root of the tests

import pgl_zoo
from pgl_zoo.cards import PUBLISHED
from pgl_zoo.nets import build_unet
from pgl_zoo.registry import registered

# The locale the test run started with (imported before any test or fixture runs).
_STARTING_LOCALE = locale.setlocale(locale.LC_ALL)


@pytest.fixture(autouse=True)
def _keep_the_locale():
    """SimpleITK's DICOM writer (GDCM) sets the process locale to "C" and leaves it there (tests and their
    module-scoped fixtures write DICOM series with it); a later test decoding a child process's UTF-8 output
    with the locale's encoding would then fail. Every test starts and ends with the run's starting locale
    (set again after the broader-scoped fixtures, which are made before this one)."""
    locale.setlocale(locale.LC_ALL, _STARTING_LOCALE)
    yield
    locale.setlocale(locale.LC_ALL, _STARTING_LOCALE)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny convolutions gain nothing from threads, and OpenMP threads waiting on each other on a busy 2-core
    runner make them many times slower: one torch thread for the module, restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def script():
    """``scripts/make_sample_data.py`` as a module (the sample sets' maker; tests/test_datasets*.py)."""
    path = Path(__file__).resolve().parents[1] / "scripts" / "make_sample_data.py"
    spec = importlib.util.spec_from_file_location("make_sample_data", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA_DIR.is_dir():
        pytest.skip(f"real data folder {DATA_DIR} is absent (it sits beside the checkout in CI)")
    return DATA_DIR


@dataclass(frozen=True)
class CliRun:
    """One ``pgl-zoo`` command run in this process: where, what (as the README writes it) and its result."""

    folder: Path  # the working folder it ran in
    command: str
    code: int
    out: str
    err: str


def run_offline(tmp_path_factory, name: str, command: str) -> CliRun:
    """``command`` run in a new folder as a fresh clone's user runs it offline (tests/_readme.offline_settings),
    with the tiny settings of tests/_readme.TINY."""
    folder = tmp_path_factory.mktemp(name)
    with pytest.MonkeyPatch.context() as patch:
        offline_settings(patch, tmp_path_factory.getbasetemp())
        patch.chdir(folder)
        code, out, err = call_captured(*cli_args(command))
    return CliRun(folder, command, code, out, err)


@pytest.fixture(scope="session")
def main_job(tmp_path_factory) -> CliRun:
    """The README's main job as its first block writes it (``pgl-zoo demo --out demo/``, 1 fine-tuning step), run
    once per test run in a folder standing for a fresh clone's root (no ../shared beside it); tests/test_readme.py
    walks the rest of the README in that folder."""
    return run_offline(tmp_path_factory, "walk", shell_commands(block(MAIN_JOB).code)[-1])


@pytest.fixture(scope="session")
def downloaded_all(tmp_path_factory) -> CliRun:
    """``pgl-zoo download --all --local-dir usb/`` (the README's air-gapped recipe), run once per test run offline;
    its folder holds ``usb/`` with every model that has weights."""
    return run_offline(tmp_path_factory, "download-all", "pgl-zoo download --all --local-dir usb/")


def lay_out_hf_cache(cache_dir: Path, repo_id: str, revision: str, files: dict[str, Path]) -> Path:
    """Place ``files`` in ``cache_dir`` exactly as ``hf_hub_download`` stores a model repo.

    models--ORG--NAME/blobs/<sha256> holds the bytes, snapshots/<revision>/<file> is a relative
    symlink to the blob, refs/main names the revision. Returns the snapshot folder.
    """
    from pgl_zoo.hashing import sha256_file

    repo_dir = cache_dir / ("models--" + repo_id.replace("/", "--"))
    (repo_dir / "blobs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs").mkdir(exist_ok=True)
    snapshot = repo_dir / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, source in files.items():
        etag = sha256_file(source)
        shutil.copyfile(source, repo_dir / "blobs" / etag)
        os.symlink(os.path.join("..", "..", "blobs", etag), snapshot / name)
    (repo_dir / "refs" / "main").write_text(revision)
    return snapshot


REVISION = "0123456789abcdef0123456789abcdef01234567"


def trained_unet(seed: int = 0):
    torch.manual_seed(seed)
    net = build_unet(pgl_zoo.get_card("pgl-ct-tiny").arch, num_classes=2)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.1)  # no longer the initialisation
    return net


@pytest.fixture
def saved(tmp_path):
    net = trained_unet()
    card = pgl_zoo.get_card("pgl-ct-tiny").replace(contents=("encoder",))  # an encoder-only entry
    folder = pgl_zoo.save_pretrained(net.state_dict(), card, tmp_path / "saved")
    return net, folder


@pytest.fixture
def published_card(saved):
    """A registered card as a published entry would be: hub repo, pinned revision, sha256."""
    _, folder = saved
    saved_card = pgl_zoo.ModelCard.from_json_file(folder / "card.json")
    card = saved_card.replace(name="test-published", status=PUBLISHED, hub_repo_id="pgl-test/test-published",
                              revision=REVISION)
    with registered(card):
        yield card
