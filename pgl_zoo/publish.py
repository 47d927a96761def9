"""The publish side of weights: writing them for others to load (the read side is :mod:`pgl_zoo.weights`).

* :func:`save_pretrained`: a model folder (``model.safetensors``, ``card.json`` with the file's
  sha256 and size, a Hub ``README.md``) from a state dict;
* :func:`portable_copy`: a registered model's verified weights copied, with card and README, into
  ``local_dir/<name>/`` (``pgl-zoo download --local-dir``), which loads with ``weights=`` or through
  ``$PGL_ZOO_WEIGHTS`` on a machine without network;
* :func:`push_to_hub` (``pgl-zoo push``): a saved folder uploaded to a Hugging Face model repository.

Every file is written to a temporary name and renamed (:mod:`pgl_zoo.atomic`), so an interrupted
write never leaves a half file under the final name.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from .atomic import atomic_write
from .cards import ModelCard
from .errors import PglZooError
from .hashing import sha256_file, verify_sha256
from .hub_readme import render_hub_readme
from .registry import get_card
from .resolve import MODEL_FOLDER, resolve_model
from .sources import CARD_NAME
from .training import check_out_folder
from .weights import ResolvedWeights, resolve_weights, weights_file

WEIGHTS_NAME = "model.safetensors"
README_NAME = "README.md"


def save_pretrained(
    state_dict: dict[str, torch.Tensor], card: ModelCard, out_dir: str | os.PathLike
) -> Path:
    """Write ``model.safetensors``, ``card.json`` (with the file's sha256 and size) and a Hub ``README.md``.

    ``state_dict`` keys are named as in :class:`pgl_zoo.nets.UNet3d` (``encoder.*``,
    ``decoder.*``, the head ``decoder.seg_layers.*``); only the parts listed in ``card.contents``
    are written, each tensor once under its zoo name (aliases are dropped, see :mod:`pgl_zoo.nets.keys`). Each file
    is written to a temporary name and renamed, so an interrupted save never leaves a half file
    under the final name. Returns the folder, which loads back with ``weights=out_dir``.
    """
    from .nets.keys import drop_aliases, part_of

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {
        k: v.detach().to("cpu").contiguous() for k, v in drop_aliases(state_dict).items() if part_of(k) in card.contents
    }
    if not any(part_of(k) == "encoder" for k in tensors):
        raise PglZooError(f"{card.name}: nothing to save: no encoder.* keys in the state dict")
    card = card.replace(filename=WEIGHTS_NAME)
    weights_path = out / WEIGHTS_NAME
    # One metadata key only: safetensors writes several in random order, which changes the digest.
    atomic_write(weights_path, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    card = card.replace(sha256=sha256_file(weights_path), size_bytes=weights_path.stat().st_size)
    atomic_write(out / CARD_NAME, lambda tmp: Path(tmp).write_text(card.to_json()))
    atomic_write(out / README_NAME, lambda tmp: Path(tmp).write_text(render_hub_readme(card)))
    return out


def export_folder(resolved: ResolvedWeights, out_dir: str | os.PathLike) -> Path:
    """Copy a verified weights file with its card and README into ``out_dir`` (a portable folder); a card
    without a sha256 gets the file's."""
    digest = resolved.verify() or sha256_file(resolved.path)  # a Hub download was verified when found
    card = resolved.card.replace(sha256=digest, size_bytes=resolved.path.stat().st_size)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(weights_file(out, card), lambda tmp: shutil.copyfile(resolved.path, tmp))
    atomic_write(out / CARD_NAME, lambda tmp: Path(tmp).write_text(card.to_json()))
    atomic_write(out / README_NAME, lambda tmp: Path(tmp).write_text(render_hub_readme(card)))
    return out


def upload_plan(folder: str | os.PathLike) -> list[dict]:
    """The files ``push_to_hub`` would upload from ``folder``, after checking the card's sha256."""
    folder = Path(folder)
    ref = resolve_model(folder)
    if ref.kind != MODEL_FOLDER:
        raise PglZooError(f"{folder}: not a model folder ({ref.kind}); push the folder that holds {CARD_NAME}")
    resolved = resolve_weights(ref)
    if not resolved.card.sha256:
        raise PglZooError(f"{folder / CARD_NAME}: card has no sha256; save the folder with save_pretrained")
    verify_sha256(resolved.path, resolved.card.sha256)
    plan = []
    for name in (resolved.card.filename, CARD_NAME, README_NAME):
        path = folder / name
        if path.is_file():
            plan.append({"file": name, "bytes": path.stat().st_size, "sha256": sha256_file(path)})
    return plan


def push_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    revision: str | None = None,
    private: bool = False,
    token: str | None = None,
    commit_message: str | None = None,
    dry_run: bool = False,
) -> dict:
    """Upload a saved folder (weights, card, README) to a Hugging Face model repository.

    With ``dry_run`` nothing touches the network: the returned dict lists what would be uploaded.
    Otherwise it also holds the commit URL and the commit hash to pin in a card's ``revision``.
    """
    plan = upload_plan(folder)
    result: dict = {"repo_id": repo_id, "files": plan, "dry_run": dry_run}
    if dry_run:
        return result
    from huggingface_hub import CommitOperationAdd, HfApi

    # Exactly the files of the plan, by name, with the bytes whose digest the plan lists (never a pattern:
    # a file named "*" would otherwise match every file in the folder).
    operations = []
    for item in plan:
        data = (Path(folder) / item["file"]).read_bytes()
        if hashlib.sha256(data).hexdigest() != item["sha256"]:
            raise PglZooError(f"{Path(folder) / item['file']}: changed while the upload was prepared; nothing uploaded")
        operations.append(CommitOperationAdd(path_in_repo=item["file"], path_or_fileobj=data))
    api = HfApi(token=token, endpoint=os.environ.get("HF_ENDPOINT") or None)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    commit = api.create_commit(
        repo_id=repo_id,
        operations=operations,
        revision=revision,
        commit_message=commit_message or f"Upload {json.loads((Path(folder) / CARD_NAME).read_text())['name']}",
    )
    result.update({"commit_url": str(commit.commit_url), "revision": commit.oid})
    return result


def _check_local_dir(folder: Path, card: ModelCard, overwrite: bool) -> None:
    """Refuse to write a portable copy over a folder that is not an earlier copy of the same weights
    (:func:`pgl_zoo.training.check_out_folder`, the one output-folder check)."""

    def same_copy(out: Path, held: list[str]) -> bool:
        try:
            own = ModelCard.from_json_file(out / CARD_NAME)
        except PglZooError:
            return False
        return own.name == card.name and bool(card.sha256) and own.sha256 == card.sha256

    check_out_folder(folder, overwrite, lambda held: (
        f"{folder}: exists and is not a copy of {card.name} with the same sha256; "
        "choose another --local-dir or pass --overwrite"), accept=same_copy)


def portable_copy(
    name: str,
    local_dir: str | os.PathLike,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``local_dir/<name>/`` (weights, card, README) from a registered model's verified weights
    (found as :func:`pgl_zoo.weights.download` finds them); returns the copied weights file.

    The copy loads with ``weights=`` or via ``$PGL_ZOO_WEIGHTS=local_dir`` on a machine without network.
    An existing ``local_dir/<name>/`` that is not an earlier copy of the same weights is refused (before
    anything is fetched) unless ``overwrite``.
    """
    card = get_card(name)
    folder = Path(local_dir) / name
    _check_local_dir(folder, card, overwrite)
    resolved = resolve_weights(card, revision=revision, cache_dir=cache_dir)
    return export_folder(resolved, folder) / resolved.card.filename
