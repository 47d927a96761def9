"""The loss-curve figure of a run (optional: only when matplotlib is installed)."""

from __future__ import annotations

from pathlib import Path


def read_metrics(path: str | Path) -> list[dict]:
    """The records of a ``metrics.jsonl`` file (one JSON object per line; a torn last line is skipped)."""
    from ..runs import read_jsonl

    return read_jsonl(path)


def write_loss_curve(metrics_path: str | Path, png_path: str | Path) -> Path | None:
    """Plot total, global and local loss against step; returns the PNG path, or None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    records = read_metrics(metrics_path)
    if not records:
        return None
    steps = [r["step"] for r in records]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.plot(steps, [r["loss"] for r in records], label="total")
    ax.plot(steps, [r["loss_global"] for r in records], label="global (2 - 2 cos)")
    if any(r.get("loss_local") is not None for r in records):
        ax.plot(steps, [r.get("loss_local") or float("nan") for r in records], label="local (2 - 2 cos)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("PGL pretraining")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path)
    plt.close(fig)
    return Path(png_path)
