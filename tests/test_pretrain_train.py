"""End-to-end pretraining: the CLI on real CT with the tiny network (loss falls), exact resume,
atomic checkpoints, Ctrl-C, export + load, and a 2-process torchrun run with identical parameters."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from _seg_helpers import DATA_DIR, write_micro_pretrain_set

from pgl_zoo.errors import PglZooError
from pgl_zoo.pretrain import PretrainConfig, pretrain
from pgl_zoo.pretrain.checkpoint import load_checkpoint, save_checkpoint

DATA = DATA_DIR
@pytest.fixture(scope="module")
def micro(tmp_path_factory) -> dict:
    """A micro architecture (card.json) and two small synthetic HU volumes: fast CPU runs."""
    return {k: str(v) for k, v in write_micro_pretrain_set(tmp_path_factory.mktemp("micro")).items()}


def _config(micro, out, **kw) -> PretrainConfig:
    base = dict(data=[micro["data"]], out=str(out), model=micro["card"], batch_size=2, steps=6, workers=0,
                cache_dir=micro["cache"], checkpoint_every=2, seed=1, lr=3e-3)
    base.update(kw)
    return PretrainConfig(**base)


def _params(run: Path) -> dict[str, torch.Tensor]:
    ckpt = load_checkpoint(run / "checkpoint.pt")
    return {**{"online." + k: v for k, v in ckpt["online"].items()},
            **{"target." + k: v for k, v in ckpt["target"].items()}}


def test_resume_gives_identical_parameters(micro, tmp_path):
    full = pretrain(_config(micro, tmp_path / "full"))
    assert full.step == 6
    with pytest.raises(PglZooError, match="already holds a checkpoint"):
        pretrain(_config(micro, tmp_path / "full"))
    first = pretrain(_config(micro, tmp_path / "split", stop_after=3))
    assert first.step == 3
    # the optimiser and the data's preprocessing (a changed grid or intensity map would change the data mid-run)
    for changed in ({"lr": 1e-2}, {"spacing": (3.0, 3.0, 3.0)}, {"window": (-250.0, 350.0)},
                    {"normalization": "minmax"}):
        with pytest.raises(PglZooError, match="cannot resume with different options"):
            pretrain(_config(micro, tmp_path / "split", resume=True, **changed))
    second = pretrain(_config(micro, tmp_path / "split", resume=True))
    assert second.step == 6 and second.parameter_digest == full.parameter_digest
    a, b = _params(tmp_path / "full"), _params(tmp_path / "split")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed run differs from the uninterrupted one"
    full_opt = load_checkpoint(tmp_path / "full" / "checkpoint.pt")["optimizer"]["state"]
    split_opt = load_checkpoint(tmp_path / "split" / "checkpoint.pt")["optimizer"]["state"]
    assert all(torch.equal(full_opt[i]["exp_avg"], split_opt[i]["exp_avg"]) for i in full_opt)
    steps = [json.loads(line)["step"] for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


# Tensor methods that copy a tensor to the host: on a GPU each one waits for the queued work.
HOST_COPIES = ("cpu", "item", "tolist", "numpy", "__float__", "__int__", "__bool__")
LOOP_FILES = {str(Path(__file__).resolve().parents[1] / "pgl_zoo" / name)
              for name in ("pretrain/trainer.py", "pretrain/steplog.py", "pretrain/model.py", "pretrain/diagnostics.py",
                           "training.py")}  # training.py: the trainers' shared frame


def _count_host_copies(monkeypatch) -> list[tuple[int, str]]:
    """(steps taken so far, method) of every host copy that the loop's own code asks for during the run."""
    import pgl_zoo.pretrain.trainer as trainer

    taken, copies = [0], []
    real_step = trainer.train_step

    def counted_step(*args, **kwargs):
        losses = real_step(*args, **kwargs)
        taken[0] += 1
        return losses

    monkeypatch.setattr(trainer, "train_step", counted_step)
    def counted(name: str):
        real = getattr(torch.Tensor, name)

        def wrapper(self, *args, **kwargs):
            if sys._getframe(1).f_code.co_filename in LOOP_FILES:
                copies.append((taken[0], name))
            return real(self, *args, **kwargs)
        return wrapper

    for name in HOST_COPIES:
        monkeypatch.setattr(torch.Tensor, name, counted(name))
    return copies


def test_log_every_copies_to_the_host_only_on_logged_steps_and_resumes_exactly(micro, tmp_path, monkeypatch):
    copies = _count_host_copies(monkeypatch)
    full = pretrain(_config(micro, tmp_path / "full", steps=10, log_every=5, checkpoint_every=0))
    monkeypatch.undo()
    # losses, the finiteness check and the collapse indicators wait for the device at steps 5 and 10 only
    # (and the parameter digest after step 10); before, every step copied its losses and indicators
    assert copies and {taken for taken, _ in copies} == {5, 10}, sorted(set(copies))
    records = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [5, 10]
    assert all(r["views_per_s"] > 0 and r["std_global"] > 0 and len(r["overlap"]) == 2 for r in records)
    summary = json.loads((tmp_path / "full" / "summary.json").read_text())
    assert summary["final_losses"]["loss"] == pytest.approx(sum(r["loss"] for r in records) / 2)  # logged steps
    assert summary["final_indicators"]["std_global"] == pytest.approx(sum(r["std_global"] for r in records) / 2)
    assert 0.3 <= summary["views_mean"]["overlap"] <= 0.8  # over all 10 steps' pairs, logged or not

    pretrain(_config(micro, tmp_path / "split", steps=10, log_every=5, checkpoint_every=0, stop_after=3))
    second = pretrain(_config(micro, tmp_path / "split", steps=10, log_every=5, checkpoint_every=0, resume=True))
    assert second.parameter_digest == full.parameter_digest
    steps = [json.loads(line)["step"] for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [3, 5, 10]  # the last step of each invocation is logged too


def test_a_non_finite_loss_between_logged_steps_is_reported_at_its_step(micro, tmp_path):
    def failed_step(run: Path, log_every: int) -> str:
        # lr 1e6: the parameters explode and the loss is NaN within a few steps
        with pytest.raises(PglZooError, match=r"the loss became nan at step (\d+); lower --lr") as caught:
            pretrain(_config(micro, run, steps=10, lr=1e6, warmup_steps=0, checkpoint_every=2, log_every=log_every))
        return caught.value.args[0].split("at step ")[1].split(";")[0]

    every_step = failed_step(tmp_path / "every", 1)
    assert failed_step(tmp_path / "deferred", 5) == every_step == "3"
    # the check before the step-2 checkpoint passed; the step-4 checkpoint was never written (its check failed)
    assert load_checkpoint(tmp_path / "deferred" / "checkpoint.pt")["step"] == 2


def test_loss_watch_names_the_first_non_finite_step_even_when_the_loss_recovers(tmp_path):
    from pgl_zoo.pretrain.distributed import DistInfo
    from pgl_zoo.pretrain.model import Losses
    from pgl_zoo.pretrain.steplog import LossWatch

    watch = LossWatch(DistInfo(), tmp_path)
    for step, value in enumerate([1.0, 0.5], start=1):
        watch.add(Losses(torch.tensor(value), torch.tensor(value), None), step)
    assert watch.check() == (0.5, 0.5, 0.0) and not watch.unchecked
    for step, value in enumerate([0.4, float("inf"), float("nan"), 0.3], start=3):
        watch.add(Losses(torch.tensor(value), torch.tensor(value), torch.tensor(0.0)), step)
    with pytest.raises(PglZooError, match="became inf at step 4"):
        watch.check()


def test_a_run_exports_for_nnunet_with_its_trained_encoder_and_decoder(micro, tmp_path):
    from pgl_zoo.nnunet import export_nnunet_checkpoint

    run = tmp_path / "run"
    pretrain(_config(micro, run, steps=2))
    summary = export_nnunet_checkpoint(run, tmp_path / "run.pth")
    assert summary["parts"] == ["encoder", "decoder"] and summary["initialised_by_nnunet"] == []
    weights = torch.load(tmp_path / "run.pth", weights_only=True)["network_weights"]
    online = load_checkpoint(run / "checkpoint.pt")["online"]
    for key in ("encoder.stem.convs.0.conv.weight", "decoder.encoder.stem.convs.0.conv.weight",
                "decoder.stages.0.convs.0.conv.weight", "decoder.transpconvs.0.weight"):
        source = key.replace("decoder.encoder.", "encoder.")
        assert torch.equal(weights[key], online["branch." + source]), key


def test_truncated_checkpoint_never_replaces_a_good_one(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"step": 1, "w": torch.arange(1000.0)}, path)

    def dies_half_way(obj, f, *a, **k):
        f.write(b"PK\x03\x04 half a zip file")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(OSError):
        save_checkpoint({"step": 2, "w": torch.zeros(1000)}, path)
    monkeypatch.undo()
    good = load_checkpoint(path)
    assert good["step"] == 1 and torch.equal(good["w"], torch.arange(1000.0))
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary file left behind
    # a file cut short on disk is reported in one line, not loaded
    (tmp_path / "cut.pt").write_bytes(path.read_bytes()[:200])
    with pytest.raises(PglZooError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "cut.pt")


def _cli(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pgl_zoo.cli", *args], capture_output=True, text=True, **kw)


def test_ctrl_c_saves_a_checkpoint(micro, tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "pgl_zoo.cli", "pretrain", "--data", micro["data"], "--out",
                             str(run), "--model", micro["card"], "--batch-size", "2", "--steps", "1000",
                             "--workers", "1", "--cache-dir", micro["cache"], "--checkpoint-every", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = run / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 2):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    ckpt = load_checkpoint(run / "checkpoint.pt")
    logged = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    assert 2 <= ckpt["step"] < 1000 and ckpt["step"] == logged[-1]


def test_bad_input_is_one_line(tmp_path):
    result = _cli("pretrain", "--data", str(tmp_path), "--out", str(tmp_path / "run"))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "no volumes found" in result.stderr
    help_text = _cli("pretrain", "--help").stdout
    for option in ("--data", "--out", "--model", "--patch-size", "--batch-size", "--steps", "--lr", "--warmup",
                   "--local-weight", "--local-scales", "--crop-scale", "--overlap", "--local-control", "--rotate",
                   "--non-hu", "--spacing", "--window", "--normalization",
                   "--workers", "--seed", "--checkpoint-every", "--log-every", "--resume", "--amp", "--compile",
                   "--cache-dir", "--device"):
        assert option in help_text, option


@pytest.mark.slow
def test_cli_pretrains_tiny_network_on_real_ct_and_exports(tmp_path):
    if not (DATA / "ct").is_dir():
        pytest.skip(f"real data folder {DATA / 'ct'} is absent (it sits beside the checkout in CI)")
    run = tmp_path / "run"
    # The folders of the first data set (4 HU CT, 3 non-HU, label maps beside a DICOM series); the
    # newer, larger ones under ../shared/data/ct would only make the test slower.
    folders = [str(DATA / "ct" / f) for f in ("totalseg_patient_a", "chest_dicom_series", "liver_3slice_dicom",
                                               "not_hu")]
    data_args = [a for f in folders for a in ("--data", f)]
    result = _cli("pretrain", *data_args, "--out", str(run), "--patch-size", "16,32,32",
                  "--batch-size", "2", "--steps", "8", "--workers", "1", "--cache-dir", str(tmp_path / "cache"),
                  "--non-hu", "rescale", "--lr", "2e-3")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "rescale" in result.stderr and "label map" in result.stderr  # warnings: stderr (pgl_zoo.messages)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records]
    assert len(losses) == 8 and all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < np.mean(losses[:3]), f"loss did not fall: {losses}"
    assert all(r["loss_local"] is not None for r in records)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["data"]["count"] == 7 and summary["step"] == 8  # 4 HU CT + 3 rescaled non-HU
    pytest.importorskip("matplotlib")
    assert (run / "loss.png").stat().st_size > 1000

    out = tmp_path / "exported"
    result = _cli("export", str(run), "--name", "my-pgl", "--out", str(out), "--decoder")
    assert result.returncode == 0, result.stderr
    import pgl_zoo

    encoder = pgl_zoo.load_pgl_encoder(str(out))
    ckpt = load_checkpoint(run / "checkpoint.pt")
    for key, value in encoder.state_dict().items():
        assert torch.equal(value, ckpt["online"]["branch.encoder." + key]), key
    card = json.loads((out / "card.json").read_text())
    assert card["name"] == "my-pgl" and card["contents"] == ["encoder", "decoder"]
    assert card["training"]["data"]["count"] == 7 and card["training"]["steps"] == 8
    assert set(card["training"]["final_losses"]) == {"loss", "loss_global", "loss_local"}
    assert card["training"]["config"]["local_weight"] == 1.0


@pytest.mark.slow
def test_intensity_overrides_reach_the_network_input_and_the_exported_card(tmp_path):
    """--spacing/--window/--normalization replace the card's preprocessing in what the network is fed (a
    soft-tissue window mapped onto [0, 1], as study v3 measured for head-and-neck organs) and in the card that
    export writes; the card's own z-score would give negative inputs."""
    from pgl_zoo.pretrain.data import prepare_volumes
    from pgl_zoo.pretrain.trainer import resolve_preprocessing

    folder = DATA / "ct" / "totalseg_patient_a"
    if not folder.is_dir():
        pytest.skip(f"real data folder {folder} is absent (it sits beside the checkout in CI)")
    overrides = ["--model", "pgl-ct-tiny", "--spacing", "4,4,3", "--window", "-250,350", "--normalization", "minmax"]
    run, cache = tmp_path / "run", tmp_path / "cache"
    result = _cli("pretrain", "--data", str(folder), "--out", str(run), *overrides, "--patch-size", "16,32,32",
                  "--batch-size", "2", "--steps", "2", "--workers", "1", "--cache-dir", str(cache))
    assert result.returncode == 0, result.stderr[-2000:]
    config = PretrainConfig.from_dict(json.loads((run / "config.json").read_text()))
    assert config.normalization == "minmax"
    card, prep = resolve_preprocessing(config)
    assert (prep.spacing_xyz_mm, prep.window, prep.normalization) == ((4.0, 4.0, 3.0), (-250.0, 350.0), "minmax")
    assert card.preprocessing.normalization == "zscore"  # the card itself is unchanged
    volumes = prepare_volumes([folder], prep, "CT", "skip", cache, jobs=1, progress=False).volumes
    assert volumes
    for volume in volumes:
        x = volume.load_normalized()
        assert x.min() == pytest.approx(0.0, abs=1e-6) and x.max() == pytest.approx(1.0, abs=1e-6)  # air, bone
    out = tmp_path / "exported"
    result = _cli("export", str(run), "--name", "soft-tissue-pgl", "--out", str(out))
    assert result.returncode == 0, result.stderr
    exported = json.loads((out / "card.json").read_text())["preprocessing"]
    assert exported["normalization"] == "minmax" and exported["window"] == [-250.0, 350.0]
    assert exported["spacing_xyz_mm"] == [4.0, 4.0, 3.0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_cpu_processes_identical_parameters(micro, tmp_path):
    script = tmp_path / "ddp_run.py"
    script.write_text(
        "import os, sys\n"
        "from pgl_zoo.pretrain import PretrainConfig, pretrain\n"
        f"cfg = PretrainConfig(data=[{micro['data']!r}], out={str(tmp_path / 'run')!r}, model={micro['card']!r},\n"
        f"    batch_size=2, steps=3, workers=0, cache_dir={micro['cache']!r}, device='cpu')\n"
        "result = pretrain(cfg)\n"
        # what rank 0 writes last, as each rank finds it on its return from pretrain()
        "done = all(os.path.exists(os.path.join(cfg.out, f)) for f in ('summary.json', 'loss.png'))\n"
        # one write per line: with PYTHONUNBUFFERED, print() writes each field apart and the ranks' lines mix
        "os.write(1, f\"RANK {os.environ['RANK']} {result.parameter_digest} {done}\\n\".encode())\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
         f"--master_port={_free_port()}", str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line.split()[1:] for line in result.stdout.splitlines() if line.startswith("RANK")]
    sums = {rank: digest for rank, digest, _ in lines}
    assert set(sums) == {"0", "1"} and sums["0"] == sums["1"], sums
    assert len(sums["0"]) == 64  # sha256 of every parameter, online and target
    # the ranks leave together (a barrier before the group is destroyed): rank 1 returns only after rank 0
    # has written the run's last files, so no rank tears gloo's connections down under rank 0's writes
    assert all(done == "True" for _, _, done in lines), lines
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert records[0]["views_per_s"] > 0
