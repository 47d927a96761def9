"""``pgl-zoo list | info | download | push``: the model zoo from the command line.

``list`` and ``info`` import no torch (the registry is pure data).
"""

from __future__ import annotations

import json

import click

from .cards import ModelCard
from .registry import get_card, list_models


@click.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of {name, status, modality, summary}.")
def list_cmd(as_json: bool) -> None:
    """List the registered models and whether their weights are available."""
    cards = [get_card(n) for n in list_models()]
    if as_json:
        rows = [{"name": c.name, "status": c.status, "modality": c.modality, "summary": c.summary} for c in cards]
        click.echo(json.dumps(rows, indent=2))
        return
    width = max(len(c.name) for c in cards)
    status_width = max(len(c.status) for c in cards)
    for card in cards:
        click.echo(f"{card.name:<{width}}  {card.status:<{status_width}}  {card.modality:<4}  {card.summary}")


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
    from .errors import PglZooError
    from .resolve import resolve_model

    ref = resolve_model(name)
    if ref.card is None:
        raise PglZooError(f"{ref.path}: no card.json describes this model")
    card = ref.card
    click.echo(card.to_json().rstrip() if as_json else format_card(card))


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
    """Fetch weights into the Hugging Face cache (checksums verified), optionally into a portable folder."""
    from .weights import fetch

    if all_models:
        names = [n for n in list_models() if get_card(n).has_weights]
        skipped = [n for n in list_models() if not get_card(n).has_weights]
        for name in skipped:
            click.echo(f"skip {name}: weights {get_card(name).status}", err=True)
    else:
        names = list(models)
    if not names:
        if all_models:
            raise click.ClickException("no registered model has weights to download yet")
        raise click.UsageError("name a model with --model NAME, or use --all")
    for name in names:
        path, verified = fetch(name, revision=revision, cache_dir=cache_dir, local_dir=local_dir, overwrite=overwrite)
        click.echo(f"{name}: {path} " + ("(sha256 verified)" if verified else "(no sha256 recorded: NOT verified)"))


@click.command("push")
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--repo-id", required=True, help="Hub repository, e.g. my-lab/pgl-ct-liver.")
@click.option("--revision", help="Branch to push to (default: main).")
@click.option("--private", is_flag=True, help="Create the repository as private.")
@click.option("--dry-run", is_flag=True, help="Only list what would be uploaded; no network.")
def push_cmd(folder, repo_id, revision, private, dry_run) -> None:
    """Upload a saved FOLDER (model.safetensors, card.json, README.md) to the Hugging Face Hub.

    Log in first with `hf auth login` (or set HF_TOKEN). Pin the printed commit as the card's revision.
    """
    from .weights import push_to_hub

    result = push_to_hub(folder, repo_id, revision=revision, private=private, dry_run=dry_run)
    for item in result["files"]:
        click.echo(f"{'would upload' if dry_run else 'uploaded'} {item['file']}  {item['bytes']} bytes  "
                   f"sha256 {item['sha256']}")
    if not dry_run:
        click.echo(f"commit {result['revision']}: {result['commit_url']}")
