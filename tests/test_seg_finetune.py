"""Fine-tuning on real hippocampus MRI: Dice rises, runs are deterministic and resumable, export loads."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from _seg_helpers import HIPPOCAMPUS, first_cases, hippocampus_subset, save_micro_encoder

from pgl_zoo.finetune import FinetuneConfig, finetune
from pgl_zoo.finetune.data import find_cases

pytestmark = pytest.mark.skipif(not HIPPOCAMPUS.is_dir(), reason=f"real data folder {HIPPOCAMPUS} is absent")

NAMES = first_cases(8)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny convolutions gain nothing from threads, and on a busy CI runner OpenMP threads waiting on
    each other can make training many times slower: use one thread here, restore afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _config(tmp_path: Path, out: str, encoder, **changes) -> FinetuneConfig:
    options = dict(
        out=tmp_path / out, num_classes=3, data=hippocampus_subset(tmp_path / f"data_{out}", NAMES),
        val_cases=NAMES[6:], encoder=encoder, arch_from=tmp_path / "arch",
        epochs=6, steps_per_epoch=10, batch_size=2, lr=3e-3, foreground_probability=0.5,
        spacing_xyz_mm="native", window="none", patch_size_zyx=(32, 32, 32), progress=False, seed=0,
    )
    options.update(changes)
    return FinetuneConfig(**options)


@pytest.fixture(scope="module")
def arch_and_encoder(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("encoders")
    # the architecture reference for --encoder none, and a (randomly initialised) tiny zoo encoder
    return save_micro_encoder(root / "arch", seed=0), save_micro_encoder(root / "enc", seed=123)


@pytest.mark.parametrize("arm", ["scratch", "encoder"])
def test_validation_dice_rises_above_first_epoch(tmp_path, arch_and_encoder, arm):
    arch, encoder = arch_and_encoder
    (tmp_path / "arch").symlink_to(arch)
    result = finetune(_config(tmp_path, arm, None if arm == "scratch" else encoder))
    first = result.history[0]["val_mean_dice"]
    assert len(result.history) == 6
    assert result.best_mean_dice > first + 0.05, [h["val_mean_dice"] for h in result.history]
    assert set(result.best_dice) == {"class_1", "class_2"}
    # metrics JSON lines, checkpoints and an exported zoo-style model
    lines = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == list(range(1, 7))
    assert (result.run_dir / "checkpoints" / "best.pt").is_file()
    assert (result.run_dir / "checkpoints" / "last.pt").is_file()
    card = json.loads((result.model_dir / "card.json").read_text())
    assert card["task"] == "segmentation" and card["num_classes"] == 3
    assert card["preprocessing"]["window"] is None and card["preprocessing"]["spacing_xyz_mm"] is None
    assert card["training"]["val_cases"] == NAMES[6:]


def test_same_seed_same_run_and_resume_continues(tmp_path, arch_and_encoder):
    arch, _ = arch_and_encoder
    (tmp_path / "arch").symlink_to(arch)
    short = dict(epochs=2, steps_per_epoch=3)
    a = finetune(_config(tmp_path, "a", None, **short))
    b = finetune(_config(tmp_path, "b", None, **short))
    assert [h["train_loss"] for h in a.history] == [h["train_loss"] for h in b.history]
    # interrupted after one epoch, then resumed: the same as the uninterrupted run
    def interrupt(record):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune(_config(tmp_path, "c", None, on_epoch_end=interrupt, **short))
    resumed = finetune(_config(tmp_path, "c", None, resume=True, **short))
    assert len(resumed.history) == 2
    assert math.isclose(resumed.history[-1]["train_loss"], a.history[-1]["train_loss"], rel_tol=1e-5)
    assert resumed.history[-1]["val_dice"] == pytest.approx(a.history[-1]["val_dice"], abs=1e-6)


def test_existing_run_needs_resume(tmp_path, arch_and_encoder):
    from pgl_zoo.errors import PglZooError

    arch, _ = arch_and_encoder
    (tmp_path / "arch").symlink_to(arch)
    finetune(_config(tmp_path, "r", None, epochs=1, steps_per_epoch=1))
    with pytest.raises(PglZooError, match="already holds a run"):
        finetune(_config(tmp_path, "r", None, epochs=1, steps_per_epoch=1))


def test_frozen_encoder_and_layer_decay(tmp_path, arch_and_encoder):
    from pgl_zoo.finetune.trainer import _build_network

    _, encoder = arch_and_encoder
    (tmp_path / "arch").symlink_to(encoder)
    config = _config(tmp_path, "f", encoder, epochs=1, steps_per_epoch=2, freeze_encoder_epochs=1, layer_decay=0.5)
    torch.manual_seed(config.seed)
    initial = {k: v.clone() for k, v in _build_network(config).state_dict().items()}  # what finetune starts from
    from_file = {k: v for k, v in _load(encoder).items() if k.startswith("encoder.")}
    result = finetune(config)
    checkpoint = torch.load(result.run_dir / "checkpoints" / "last.pt", weights_only=True)
    state = checkpoint["model"]
    encoder_keys = list(from_file)  # zoo names: each encoder tensor once
    assert encoder_keys and all(torch.equal(state[k], from_file[k]) for k in encoder_keys)  # frozen: untouched
    # trained: the decoder and the head (segmentation layers) moved away from their initialisation
    for part in (("decoder.stages.", "decoder.transpconvs."), ("decoder.seg_layers.",)):
        keys = [k for k in state if k.startswith(part) and state[k].is_floating_point()]
        assert keys and any(not torch.equal(state[k], initial[k]) for k in keys), part
    # layer decay 0.5 over n encoder stages: stem lr*0.5**(n+1), stage i lr*0.5**(n-i), decoder and head lr
    n = json.loads((encoder / "card.json").read_text())["arch"]["arch_kwargs"]["n_stages"]
    base_lrs = [g["base_lr"] for g in checkpoint["optimizer"]["param_groups"]]
    expected = [config.lr * 0.5 ** (n + 1), *[config.lr * 0.5 ** (n - i) for i in range(n)], config.lr]
    assert base_lrs == pytest.approx(expected, rel=1e-12)


def test_explicit_case_pairs(tmp_path, arch_and_encoder):
    arch, _ = arch_and_encoder
    pairs = find_cases(HIPPOCAMPUS)[:3]
    config = FinetuneConfig(out=tmp_path / "p", num_classes=3, cases=pairs, train_cases=[pairs[0].name],
                            val_cases=[pairs[2].name], encoder=None, arch_from=arch, epochs=1,
                            steps_per_epoch=1, spacing_xyz_mm="native", window="none", progress=False)
    result = finetune(config)
    assert result.history[0]["val_dice"].keys() == {"class_1", "class_2"}


def _load(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")
