"""Export a pretraining run as a zoo folder: ``model.safetensors`` + ``card.json`` + README.md.

The online network's encoder (and, optionally, its decoder) is saved with keys named as in
:class:`pgl_zoo.nets.UNet3d` (``encoder.*``, ``decoder.*``), with a card that records the training
data (count, sources), steps, configuration and final losses. ``pgl_zoo.load_pgl_encoder(DIR)`` or
``load_pgl_encoder(name, weights=DIR)`` loads it.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..arch import stage_widths
from ..cards import NOT_PUBLISHED
from ..errors import PglZooError
from ..registry import get_card
from ..resolve import model_card
from ..runs import read_jsonl
from ..training import check_out_folder
from .checkpoint import CHECKPOINT_NAME, load_checkpoint
from .trainer import METRICS_NAME


def final_losses(run_dir: Path, step: int, last: int = 10) -> dict[str, float]:
    """Mean of the last ``last`` logged losses up to ``step``."""
    records = [r for r in read_jsonl(run_dir / METRICS_NAME) if r["step"] <= step][-last:]  # a torn line skipped
    out: dict[str, float] = {}
    for key in ("loss", "loss_global", "loss_local"):
        values = [r[key] for r in records if r.get(key) is not None]
        if values:
            out[key] = sum(values) / len(values)
    return out


def _exported_from(folder: Path, run_dir: Path) -> bool:
    """True when ``folder`` holds only an earlier export (card.json, weights, README) of ``run_dir``."""
    try:
        card = json.loads((folder / "card.json").read_text())
        source = Path(card["training"]["config"]["out"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    own = {"card.json", "README.md", str(card.get("filename", "model.safetensors"))}
    return source.resolve() == run_dir.resolve() and {p.name for p in folder.iterdir()} <= own


def export_run(run_dir: str | Path, name: str, out_dir: str | Path, include_decoder: bool = False,
               overwrite: bool = False) -> Path:
    """Write the run's encoder (and decoder) with a model card to ``out_dir``; returns the folder.

    A non-empty ``out_dir`` is refused unless ``overwrite``, or unless it is an earlier export of this
    same run (which a re-export only refreshes).
    """
    from ..publish import save_pretrained

    run_dir, out = Path(run_dir), Path(out_dir)
    check_out_folder(out, overwrite, lambda held: f"{out}: exists and is not empty (not an export of {run_dir}); "
                     "choose another --out or pass --overwrite",
                     accept=lambda folder, held: _exported_from(folder, run_dir))
    ckpt = load_checkpoint(run_dir / CHECKPOINT_NAME)
    cfg = ckpt["config"]
    base = model_card(ckpt["card_file"]) if ckpt.get("card_file") else get_card(ckpt["card"])
    parts = ("encoder", "decoder") if include_decoder else ("encoder",)
    levels = sorted(int(i) for i in ckpt.get("local_levels", []))
    if include_decoder and (cfg["local_weight"] == 0 or not levels):
        raise PglZooError(f"{run_dir}: the decoder was not trained (local weight 0); export without --decoder")
    state = {k[len("branch."):]: v for k, v in ckpt["online"].items()
             if k.startswith(tuple(f"branch.{p}." for p in parts))}
    prep = base.preprocessing.with_overrides(cfg.get("spacing") or None, cfg.get("window") or None,
                                             cfg.get("normalization") or None)
    step = int(ckpt["step"])
    data = ckpt.get("data", {})
    training = {
        "method": "PGL (global BYOL loss + prior-guided local loss)" if cfg["local_weight"] else
                  "BYOL baseline (global loss only, PGL local weight 0)",
        "steps": step,
        "steps_planned": cfg["steps"],
        "data": {"count": data.get("count"), "sources": data.get("sources", []), "skipped": data.get("skipped", [])},
        "config": cfg,
        "local_levels": levels,
        "final_losses": final_losses(run_dir, step),
        "base_card": base.name,
    }
    notes = f"Exported from pretraining run {run_dir.name} at step {step} with pgl-zoo."
    if include_decoder:
        notes += (f" Decoder levels {levels[0]}..{len(stage_widths(base.arch)) - 2} were trained by the local loss;"
                  f" finer levels (if any) keep their initialisation.")
    card = base.replace(
        name=name, summary=f"{base.summary} Trained locally by pgl-zoo pretrain ({step} steps).",
        status=NOT_PUBLISHED, preprocessing=prep, patch_size_zyx=tuple(cfg.get("patch_size") or base.patch_size_zyx),
        contents=parts, hub_repo_id=None, revision=None, sha256=None, training=training, notes=notes,
        evaluation=None,  # new weights: the base card's measured result does not describe them
    )
    return save_pretrained(state, card, out_dir)
