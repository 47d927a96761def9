"""benchmarks/gpu_check.py, the prepared GPU check, on the CPU: its --quick path runs every branch and writes
every measurement (the CUDA-only ones skipped with their reason), taking the GPU machine's path (no
SimpleITK: synthetic data); a machine without dynamic-network-architectures gets a complete file of reasons."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def _check(out: Path, *args: str, missing: str | None = None) -> subprocess.CompletedProcess:
    """gpu_check.py in a child process (it puts a stand-in for SimpleITK into sys.modules); ``missing``: a
    package that child cannot import."""
    argv = ["gpu_check.py", "--device", "cpu", "--quick", "--no-simpleitk", "--out", str(out), *args]
    code = (f"import runpy, sys; sys.modules[{missing!r}] = None; " if missing else "import runpy, sys; ")
    code += f"sys.argv = {argv!r}; runpy.run_path({str(SCRIPT)!r}, run_name='__main__')"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


def test_quick_check_runs_every_branch_and_records_every_measurement(tmp_path):
    pytest.importorskip("monai")
    out = tmp_path / "gpu_check.json"
    proc = _check(out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    meta = data["meta"]
    assert meta["status"] == "complete" and meta["device"] == "cpu" and meta["packages"]["SimpleITK"] is None
    assert meta["data"].startswith("synthetic")

    runs = data["pretrain"]["runs"]
    assert set(runs) == {"b2-fp32", "b2-bf16", "b4-fp32", "b4-bf16", "b2-compiled-fp32", "b4-compiled-fp32"}
    for key, run in runs.items():
        if key.endswith("-bf16"):  # CUDA-only measurements are skipped, with the reason
            assert "CUDA only" in run["skipped"], run
            continue
        assert run["views_per_s"] > 0 and run["step_ms_median"] > 0 and run["timed_steps"] > 0, run
        assert "CUDA only" in run["peak_memory"]["skipped"]
    assert runs["b4-compiled-fp32"]["compiled"] and runs["b4-compiled-fp32"]["compile_backend"] == "eager"

    waits = data["data_wait"]["runs"]
    assert set(waits) == {"workers-0", "workers-1"}
    for run in waits.values():
        assert 0 < run["wait_share"] < 1 and run["timed_steps"] > 0 and run["views_per_s"] > 0, run

    segment = data["segment"]
    assert {"MONAI, batch 4", "pgl-zoo eager, batch 2"} <= set(segment["median_s"]), segment
    assert all(t > 0 for t in segment["median_s"].values()) and segment["speed_vs_monai_batch_4"]
    assert all(share > 0.99 for share in segment["identical_labels"].values())
    assert all(d < 1e-3 for d in segment["max_probability_difference"].values())
    assert "pretraining pgl-ct" in proc.stdout and "data wait" in proc.stdout  # the table


def test_without_the_network_library_every_measurement_is_skipped_with_the_reason(tmp_path):
    out = tmp_path / "gpu_check.json"
    proc = _check(out, missing="dynamic_network_architectures")
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["meta"]["status"] == "complete" and data["meta"]["packages"]["dynamic_network_architectures"] is None
    for key in ("pretrain", "data_wait", "segment"):
        assert "dynamic-network-architectures is not installed" in data[key]["skipped"]
