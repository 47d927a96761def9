"""The bundled pgl-ct-tiny weights: verified, complete, and present in a wheel installed without network.

The wheel test also checks that the sample data (pgl_zoo.datasets) is in the installed wheel.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import pgl_zoo
from pgl_zoo.hashing import sha256_file
from pgl_zoo.weights import BUNDLED_DIR

REPO = Path(__file__).resolve().parents[1]


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


@pytest.mark.slow
def test_wheel_installed_without_network_loads_the_bundled_encoder(tmp_path):
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w",
         str(wheels), str(REPO)],
        capture_output=True, text=True,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = wheels.glob("pgl_zoo-*.whl")
    site = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(site), str(wheel)],
        capture_output=True, text=True,
    )
    assert install.returncode == 0, install.stderr
    code = (
        "import pgl_zoo\n"
        f"assert pgl_zoo.__file__.startswith({str(site)!r}), pgl_zoo.__file__\n"
        "enc = pgl_zoo.load_pgl_encoder('pgl-ct-tiny')\n"
        "r = enc.load_report\n"
        "assert r.source == 'bundled' and r.sha256_verified and r.encoder_fraction == 1.0, r\n"
        "print(r.summary())\n"
        # the sample data came with the wheel and resolves inside the installed package
        "import SimpleITK as sitk\n"
        "from pgl_zoo.datasets import sample_lungs_ct\n"
        "s = sample_lungs_ct()\n"
        f"assert str(s.folder).startswith({str(site)!r}), s.folder\n"
        "assert len(s.case_ids) == 6 and all(p.is_file() for pair in s.pairs for p in pair)\n"
        "assert 'CC BY 3.0' in s.license and (s.folder / 'README.md').is_file()\n"
        "assert sitk.ReadImage(str(s.pairs[0][1])).GetSpacing() == (3.0, 3.0, 3.0)\n"
        "from pgl_zoo.cli import main\n"
        "main(['sample-data'])\n"
    )
    env = dict(os.environ, PYTHONPATH=str(site), HF_HUB_OFFLINE="1", HF_ENDPOINT="http://127.0.0.1:9",
               HF_HUB_CACHE=str(tmp_path / "empty-cache"))
    env.pop("PGL_ZOO_WEIGHTS", None)
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "100.0 %" in result.stdout and "sha256 verified" in result.stdout
    assert f"6 cases (CT + lung label), 12.5 MB, in {site}" in result.stdout
