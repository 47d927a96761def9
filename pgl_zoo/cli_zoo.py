"""``pgl-zoo list | info | download | push``: the model zoo from the command line.

``list`` and ``info`` import no torch (the registry is pure data).
"""

from __future__ import annotations

import json

import click

from .cards import ModelCard
from .messages import say
from .registry import get_card, list_models


def _size(n: int | None) -> str:
    return f"{n / 1e6:.1f} MB" if n else "-"


@click.command("list")
@click.option("--json", "as_json", is_flag=True,
              help="Print a JSON list of {name, status, size_bytes, modality, weights, weights_path, evaluation, "
              "summary}; evaluation is the one-line measured result or null.")
def list_cmd(as_json: bool) -> None:
    """List the registered models: status, weights size, modality, where the weights are now, measured result.

    \b
    WEIGHTS says where loading NAME would take them from now (first match, as pgl-zoo looks):
      portable     $PGL_ZOO_WEIGHTS/NAME/, written by `pgl-zoo download --local-dir`
      bundled      inside the installed package
      cached       the Hugging Face cache, at the card's pinned revision
      remote only  on the Hub: downloaded on first use or by `pgl-zoo download`
      none         weights not published
    SIZE is the weights file's (from the local copy, else from the card). RESULT is the card's
    measured transfer result, or "not measured". Reads the disk only: no network, no torch.
    """
    from .sources import locate

    cards = [get_card(n) for n in list_models()]
    locations = [locate(c) for c in cards]
    rows = [
        {
            "name": c.name,
            "status": c.status,
            "size_bytes": where.size_bytes or c.size_bytes,
            "modality": c.modality,
            "weights": where.place,
            "weights_path": str(where.path) if where.path else None,
            "evaluation": c.evaluation["summary"] if c.evaluation else None,
            "summary": c.summary,
        }
        for c, where in zip(cards, locations, strict=True)
    ]
    if as_json:
        say(json.dumps(rows, indent=2))
        return
    table = [("NAME", "STATUS", "SIZE", "MODALITY", "WEIGHTS", "RESULT")] + [
        (r["name"], r["status"], _size(r["size_bytes"]), r["modality"], r["weights"], r["evaluation"] or "not measured")
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(5)]
    for row in table:
        say("  ".join(f"{cell:<{w}}" for cell, w in zip(row[:5], widths, strict=True)) + "  " + row[5])


def format_card(card: ModelCard) -> str:
    """A readable, complete rendering of a card (every field)."""
    data = card.to_dict()
    lines = []
    for key, value in data.items():
        if key == "preprocessing":
            lines.append("preprocessing:")
            lines += [f"  {k}: {v}" for k, v in value.items()]
        elif isinstance(value, dict):
            lines.append(f"{key}:")
            lines += [f"  {k}: {json.dumps(v) if not isinstance(v, str) else v}" for k, v in value.items()]
        elif key == "evaluation" and value is None:
            lines.append("evaluation: not measured")
        elif key == "citation":
            lines.append("citation:")
            lines += [f"  {line}" for line in str(value).splitlines()]
        else:
            lines.append(f"{key}: {value if value is not None else '-'}")
    return "\n".join(lines)


@click.command("info")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the card as JSON.")
def info_cmd(name: str, as_json: bool) -> None:
    """Show the whole model card of NAME (a registered model, or a folder with card.json)."""
    from .resolve import model_card

    card = model_card(name)
    say(card.to_json().rstrip() if as_json else format_card(card))


@click.command("download")
@click.option("--model", "models", multiple=True, metavar="NAME", help="Model to fetch (repeatable).")
@click.option("--all", "all_models", is_flag=True, help="Every model that has weights.")
@click.option("--revision", help="Hub revision (branch, tag or commit); default: the card's pinned commit.")
@click.option("--cache-dir", type=click.Path(file_okay=False), help="Hugging Face cache folder to use.")
@click.option(
    "--local-dir",
    type=click.Path(file_okay=False),
    help="Also write a portable folder DIR/NAME/ (weights, card, README) to carry to an offline machine; "
    "there, use it with weights=DIR/NAME or PGL_ZOO_WEIGHTS=DIR.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing DIR/NAME/ that is not a copy of the same weights.")
def download_cmd(models, all_models, revision, cache_dir, local_dir, overwrite) -> None:
    """Fetch weights into the Hugging Face cache (sha256 verified), optionally into a portable folder.

    A model already in the cache at its pinned commit is not fetched again: no request is made. A
    download shows a progress bar and resumes after a dropped connection; a file that fails its
    sha256 is refused and removed from the cache. The Hub is HF_ENDPOINT (or `pgl-zoo --endpoint URL
    download ...`, e.g. a mirror); the cache is HF_HUB_CACHE or --cache-dir; `pgl-zoo --offline
    download ...` (HF_HUB_OFFLINE=1) uses the cache only.
    """
    from .publish import portable_copy
    from .weights import download

    if all_models:
        names = [n for n in list_models() if get_card(n).has_weights]
        skipped = [n for n in list_models() if not get_card(n).has_weights]
        for name in skipped:
            say(f"skip {name}: weights {get_card(name).status}", err=True)
    else:
        names = list(models)
    if not names:
        if all_models:
            raise click.ClickException("no registered model has weights to download yet")
        raise click.UsageError("name a model with --model NAME, or use --all")
    for name in names:
        if local_dir is not None:
            path = portable_copy(name, local_dir, revision=revision, cache_dir=cache_dir, overwrite=overwrite)
        else:
            path = download(name, revision=revision, cache_dir=cache_dir)
        verified = bool(get_card(name).sha256)  # both refuse a file that fails a recorded sha256
        say(f"{name}: {path} " + ("(sha256 verified)" if verified else "(no sha256 recorded: NOT verified)"))


@click.command("push")
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--repo-id", required=True, help="Hub repository, e.g. my-lab/pgl-ct-liver.")
@click.option("--revision", help="Branch to push to (default: main).")
@click.option("--private", is_flag=True, help="Create the repository as private.")
@click.option("--dry-run", is_flag=True, help="Only list what would be uploaded; no network.")
def push_cmd(folder, repo_id, revision, private, dry_run) -> None:
    """Upload a saved FOLDER (model.safetensors, card.json, README.md) to the Hugging Face Hub.

    The files land at the repository's root, the layout `pgl-zoo download` reads. Log in first with
    `hf auth login` (or set HF_TOKEN); HF_ENDPOINT (or `pgl-zoo --endpoint URL push ...`) selects
    another Hub. Pin the
    printed commit as the card's revision (and the card's sha256 and size_bytes from card.json).
    """
    from .publish import push_to_hub

    result = push_to_hub(folder, repo_id, revision=revision, private=private, dry_run=dry_run)
    for item in result["files"]:
        say(f"{'would upload' if dry_run else 'uploaded'} {item['file']}  {item['bytes']} bytes  "
                   f"sha256 {item['sha256']}")
    if not dry_run:
        say(f"commit {result['revision']}: {result['commit_url']}")
