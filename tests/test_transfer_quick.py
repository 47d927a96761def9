"""benchmarks/transfer.py --quick runs every step of the transfer study end to end."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "transfer.py"


@pytest.mark.slow
def test_transfer_quick_end_to_end(data_dir, tmp_path):
    spec = importlib.util.spec_from_file_location("transfer", SCRIPT)
    transfer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(transfer)
    hippocampus = data_dir / "mri" / "hippocampus"
    out = transfer.main(["--quick", "--data", str(hippocampus), "--work", str(tmp_path / "work"),
                         "--out", str(tmp_path / "out")])
    runs = out["runs"]
    assert sorted(r["arm"] for r in runs) == ["byol", "pgl", "scratch"]
    for run in runs:
        assert set(run["test_dice"]) == {"anterior", "posterior"}
        assert all(0.0 <= d <= 1.0 for d in run["test_dice"].values())
    split = out["meta"]["split"]
    assert not set(split["test"]) & set(split["pool"]), "test cases must never be pretrained or fine-tuned on"
    saved = json.loads((tmp_path / "out" / "transfer-quick.json").read_text())
    assert saved["runs"] == json.loads(json.dumps(runs, default=float))
    table = (tmp_path / "out" / "transfer-quick.md").read_text()
    assert "| 2 | pgl |" in table and "| 2 | byol |" in table and "| 2 | scratch |" in table
    assert (tmp_path / "out" / "transfer-quick.png").stat().st_size > 1000
    # the pretrained arms really start from their exported encoders
    pgl_card = json.loads((tmp_path / "work" / "encoder-pgl" / "card.json").read_text())
    byol_card = json.loads((tmp_path / "work" / "encoder-byol" / "card.json").read_text())
    assert pgl_card["training"]["config"]["local_weight"] == 1.0
    assert byol_card["training"]["config"]["local_weight"] == 0.0
    # a second invocation reuses every finished run
    again = transfer.main(["--quick", "--data", str(hippocampus), "--work", str(tmp_path / "work"),
                           "--out", str(tmp_path / "out")])
    assert [r["test_dice"] for r in again["runs"]] == [r["test_dice"] for r in runs]
    assert all(p["reused"] for p in again["meta"]["pretraining"])
