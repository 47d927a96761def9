"""The bundled pgl-ct-tiny weights: verified, complete, and present in a wheel installed without network.

The wheel tests install the built wheel into an empty venv and run it with no network and no checkout
or ../shared in reach: the bundled encoder and the sample data (pgl_zoo.datasets) load, and the main
job's fast path (``pgl-zoo demo --fast``) runs once the zoo's lung model is bundled.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import SimpleITK as sitk

import pgl_zoo
from pgl_zoo.cards import BUNDLED
from pgl_zoo.demo import DEFAULT_MODEL
from pgl_zoo.hashing import sha256_file
from pgl_zoo.sources import BUNDLED_DIR

REPO = Path(__file__).resolve().parents[1]
ZOO_MODEL_BAR = 0.90  # the zoo's lung model on the held-out sample case: a correct segmentation, not a rough one


def test_bundled_encoder_is_registered_verified_and_complete():
    card = pgl_zoo.get_card("pgl-ct-tiny")
    assert card.status == "bundled"
    bundled = BUNDLED_DIR / "pgl-ct-tiny" / "model.safetensors"
    assert sha256_file(bundled) == card.sha256
    assert bundled.stat().st_size < 10 * 2**20
    encoder = pgl_zoo.load_pgl_encoder("pgl-ct-tiny")
    report = encoder.load_report
    assert report.source == "bundled" and report.sha256_verified and report.sha256 == card.sha256
    assert report.complete and report.encoder_fraction == 1.0
    # the card shipped beside the weights tells the same story as the registry
    shipped = pgl_zoo.ModelCard.from_json_file(BUNDLED_DIR / "pgl-ct-tiny" / "card.json")
    assert shipped.sha256 == card.sha256 and shipped.arch == card.arch
    assert shipped.preprocessing == card.preprocessing
    assert card.training["steps"] >= 100 and card.training["data"]["count"] >= 5
    assert "CC BY 4.0" in card.license


@dataclass(frozen=True)
class InstalledWheel:
    """A virtual environment holding only the built wheel (no pip, no pgl-zoo checkout on sys.path)."""

    python: Path
    bin: Path
    site: Path
    home: Path  # an empty working folder: no ../shared beside it, no checkout
    env: dict


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory) -> InstalledWheel:
    """Build the wheel, install it into an empty venv, run everything there with no network.

    The venv gets its third-party dependencies (torch, SimpleITK, ...) through a ``.pth`` file naming
    this interpreter's site-packages folders, since nothing can be downloaded; a ``.pth`` line only
    adds a folder to sys.path (the folder's own ``.pth`` files, e.g. an editable pgl-zoo, are not
    run), and the venv's own site-packages comes first, so ``pgl_zoo`` is the wheel's.
    """
    tmp = tmp_path_factory.mktemp("wheel")
    wheels = tmp / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w",
         str(wheels), str(REPO)],
        capture_output=True, text=True,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = wheels.glob("pgl_zoo-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               check=True, capture_output=True, text=True).stdout.strip())
    clean_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # a checkout there: "already installed"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q",
         str(wheel)],
        capture_output=True, text=True, env=clean_env,
    )
    assert install.returncode == 0, install.stderr
    # after the install: pip must not see another pgl-zoo (e.g. an editable one) and skip the wheel
    dependencies = [p for p in sys.path if p.endswith(("site-packages", "dist-packages")) and Path(p).is_dir()]
    (site / "_pgl_zoo_test_dependencies.pth").write_text("\n".join(dependencies) + "\n")
    home = tmp / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PGL_ZOO_WEIGHTS", "PGL_ZOO_DEBUG")}
    env.update(HF_HUB_OFFLINE="1", HF_ENDPOINT="http://127.0.0.1:9", HF_HUB_CACHE=str(tmp / "empty-cache"),
               PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}")
    return InstalledWheel(python=python, bin=venv / "bin", site=site, home=home, env=env)


@pytest.mark.slow
def test_wheel_installed_without_network_loads_the_bundled_encoder_and_the_sample_data(installed_wheel):
    wheel = installed_wheel
    site = str(wheel.site)
    code = (
        "import pgl_zoo\n"
        f"assert pgl_zoo.__file__.startswith({site!r}), pgl_zoo.__file__\n"
        "enc = pgl_zoo.load_pgl_encoder('pgl-ct-tiny')\n"
        "r = enc.load_report\n"
        "assert r.source == 'bundled' and r.sha256_verified and r.encoder_fraction == 1.0, r\n"
        "print(r.summary())\n"
        # the sample data came with the wheel and resolves inside the installed package
        "import SimpleITK as sitk\n"
        "from pgl_zoo.datasets import sample_lungs_ct\n"
        "s = sample_lungs_ct()\n"
        f"assert str(s.folder).startswith({site!r}), s.folder\n"
        "assert len(s.case_ids) == 6 and all(p.is_file() for pair in s.pairs for p in pair)\n"
        "assert 'CC BY 3.0' in s.license and (s.folder / 'README.md').is_file()\n"
        "assert sitk.ReadImage(str(s.pairs[0][1])).GetSpacing() == (3.0, 3.0, 3.0)\n"
        # and the head-and-neck set, with its structures.json (package data *.json)
        "from pgl_zoo.datasets import sample_hn_ct\n"
        "h = sample_hn_ct()\n"
        f"assert str(h.folder).startswith({site!r}), h.folder\n"
        "assert h.case_ids == ('hn_247', 'hn_286') and all(p.is_file() for pair in h.pairs for p in pair)\n"
        "assert h.labelled_classes_file is not None and 'OpenKBP' in h.license\n"
    )
    result = subprocess.run([wheel.python, "-c", code], cwd=wheel.home, env=wheel.env, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    assert "100.0 %" in result.stdout and "sha256 verified" in result.stdout
    # the installed command, not the checkout's
    listing = subprocess.run([wheel.bin / "pgl-zoo", "sample-data"], cwd=wheel.home, env=wheel.env,
                             capture_output=True, text=True)
    assert listing.returncode == 0, listing.stderr
    assert f"6 cases (CT + lung label), 12.5 MB, in {wheel.site}" in listing.stdout


@pytest.mark.slow
def test_wheel_runs_the_main_jobs_fast_path_offline(installed_wheel):
    """`pgl-zoo demo --fast` (part (a): the zoo's lung model on the held-out sample CT) from the installed wheel."""
    card = pgl_zoo.get_card(DEFAULT_MODEL) if DEFAULT_MODEL in pgl_zoo.list_models() else None
    if card is None or card.status != BUNDLED:
        pytest.skip(f"{DEFAULT_MODEL} is not registered as a bundled model yet; this test runs once it is")
    wheel = installed_wheel
    run = subprocess.run([wheel.bin / "pgl-zoo", "demo", "--out", "demo", "--fast"], cwd=wheel.home, env=wheel.env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    summary = json.loads((wheel.home / "demo" / "summary.json").read_text())
    assert summary["zoo_model"]["model"] == DEFAULT_MODEL and "finetuned" not in summary
    assert summary["image"].startswith(str(wheel.site))  # the sample data inside the installed wheel
    image = sitk.ReadImage(summary["image"])
    label = sitk.ReadImage(str(wheel.home / "demo" / summary["zoo_model"]["label_map"]))
    assert (label.GetSize(), label.GetSpacing(), label.GetOrigin(), label.GetDirection()) == \
        (image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection())
    assert summary["zoo_model"]["dice"] >= ZOO_MODEL_BAR, f"{DEFAULT_MODEL}: Dice {summary['zoo_model']['dice']}"
    assert (wheel.home / "demo" / "preview.png").stat().st_size > 10_000
