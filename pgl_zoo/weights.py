"""Where weights come from, and how they are written.

Resolution order for a card (the first that applies wins; see :mod:`pgl_zoo.sources`):

1. an explicit file or folder given by the user (``weights=``);
2. ``$PGL_ZOO_WEIGHTS/<name>/``, a folder of portable copies (``pgl-zoo download --local-dir``);
3. the copy bundled inside the package (``pgl_zoo/bundled/<name>/``);
4. the Hugging Face cache, then the Hub, through ``huggingface_hub.hf_hub_download`` with the
   card's pinned revision (honours ``HF_HUB_OFFLINE``, ``HF_ENDPOINT``, ``HF_HUB_CACHE``). A file
   already cached at a pinned commit is used without calling the Hub at all.

The sha256 recorded in the card is checked before any byte is deserialised. A file fetched from
the Hub (or found in its cache) that fails the check is removed from the cache, so that the next
attempt downloads it again instead of failing on the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .atomic import atomic_write
from .cards import BUNDLED, ModelCard
from .errors import ChecksumError, LoadError, OverwriteError, PglZooError, WeightsNotAvailableError
from .hashing import sha256_file, verify_sha256
from .hub_readme import render_hub_readme
from .registry import get_card
from .resolve import resolve_model
from .sources import BUNDLED_DIR, CARD_NAME, ENV_WEIGHTS_DIR, PORTABLE, cached_file, is_commit, local_folder

WEIGHTS_NAME = "model.safetensors"
README_NAME = "README.md"
# The card fields that decide what a network computes from a scan; descriptive fields (summary, notes,
# status, training, evaluation) may differ in a copy, the registered card is used either way.
USAGE_FIELDS = ("arch", "modality", "preprocessing", "patch_size_zyx", "architecture", "in_channels", "contents",
                "task", "num_classes", "label_names", "filename")
SOURCE_LABELS = {PORTABLE: f"${ENV_WEIGHTS_DIR}", BUNDLED: "bundled"}  # LoadReport.source of a local copy


@dataclass(frozen=True)
class ResolvedWeights:
    """A weights file on disk, the card describing it, and where it was found."""

    path: Path
    card: ModelCard
    source: str


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _from_folder(folder: Path, card: ModelCard | None, source: str) -> ResolvedWeights:
    card_file = folder / CARD_NAME
    if card_file.is_file():
        card = ModelCard.from_json_file(card_file)
    if card is None:
        raise PglZooError(f"{folder}: no {CARD_NAME} in the folder and no registered model named")
    path = weights_file(folder, card)
    if not path.is_file():
        raise WeightsNotAvailableError(f"{folder}: no {card.filename} in the folder")
    return ResolvedWeights(path, card, source)


def weights_file(folder: Path, card: ModelCard) -> Path:
    """``folder / card.filename``, refusing a filename that leaves the folder (``../x``, ``/x``, ``a/b``)."""
    name = str(card.filename)
    if not name or name in (".", "..") or Path(name).name != name or "\\" in name or Path(name).is_absolute():
        raise PglZooError(f"{folder / CARD_NAME}: filename {name!r} must name a file inside {folder}")
    return folder / name


def _registered_folder(folder: Path, card: ModelCard, source: str) -> ResolvedWeights:
    """A folder standing in for a registered model: its card must record the registry's digest and agree with
    the registered card in every field that says how the weights are used (:data:`USAGE_FIELDS`: a registered
    name keeps its registered spacing, window, labels...); the registered card is the one used."""
    found = _from_folder(folder, card, source)
    if card.sha256 and found.card.sha256 != card.sha256:
        raise ChecksumError(
            f"{folder / CARD_NAME}: records sha256 {found.card.sha256}, but {card.name} is registered with "
            f"{card.sha256}; the folder holds other weights than the registered ones"
        )
    ours, theirs = card.to_dict(), found.card.to_dict()
    differ = [k for k in USAGE_FIELDS if ours[k] != theirs[k]]
    if differ:
        raise PglZooError(
            f"{folder / CARD_NAME}: differs from the registered card of {card.name} in {', '.join(differ)}; a "
            "registered name keeps its registered card (load the folder by its path to use it as a model of its own)")
    return ResolvedWeights(found.path, card.replace(size_bytes=card.size_bytes or found.card.size_bytes), source)


def card_for(name_or_path: str | os.PathLike) -> tuple[ModelCard | None, Path | None]:
    """A registered name gives (its card, None); a path gives (None, path): see :mod:`pgl_zoo.resolve`
    (a registered name is never shadowed by a same-named file or folder in the working directory)."""
    ref = resolve_model(name_or_path)
    return (ref.card, None) if ref.registered else (None, ref.path)


def resolve_weights(
    model: str | ModelCard,
    weights: str | os.PathLike | None = None,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool | None = None,
) -> ResolvedWeights:
    """Find the weights file for ``model`` (a registered name, a card, or a folder/file path).

    Raises WeightsNotAvailableError with a one-line explanation when nothing is found.
    """
    card: ModelCard | None
    if isinstance(model, ModelCard):
        card = model
    else:
        card, path = card_for(model)
        if path is not None:
            weights = path
    if weights is not None:
        path = Path(weights).expanduser()
        if path.is_dir():
            return _from_folder(path, card, "local folder")
        if path.is_file():
            sibling = path.parent / CARD_NAME
            if sibling.is_file():
                found = ModelCard.from_json_file(sibling)
                if found.filename == path.name:
                    return ResolvedWeights(path, found, "explicit file")
            if card is None:
                raise PglZooError(f"{path}: a bare weights file needs a model name or a {CARD_NAME} beside it")
            # The user chose this file over the registered one: the registry's digest does not describe it.
            # The load report gives its digest and says it was not verified against a record.
            return ResolvedWeights(path, card.replace(sha256=None, size_bytes=None), "explicit file")
        raise WeightsNotAvailableError(f"{path}: no such file or folder")
    assert card is not None
    local = local_folder(card)
    if local is not None:
        place, folder = local
        return _registered_folder(folder, card, SOURCE_LABELS[place])
    if card.status == BUNDLED:
        raise WeightsNotAvailableError(
            f"{card.name}: bundled weights are missing from {BUNDLED_DIR / card.name}; reinstall pgl-zoo")
    if not card.has_weights or not card.hub_repo_id:
        raise WeightsNotAvailableError(
            f"{card.name}: weights {card.status}; pass weights=PATH (or --weights) to load your own, "
            "or pretrained=False for the untrained architecture"
        )
    return _hub_download(card, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only)


def _hub_download(card: ModelCard, *, revision, cache_dir, local_files_only) -> ResolvedWeights:
    revision = revision or card.revision
    # A file cached at a pinned commit cannot change: use it without calling huggingface_hub, which
    # would still contact the endpoint (its user-agent telemetry fetches a registry once a day).
    path = cached_file(card, revision, cache_dir) if is_commit(revision) else None
    if path is None:
        path = _hf_hub_download(card, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only)
    if card.sha256:
        _verify_or_evict(path, card, revision)
    return ResolvedWeights(path, card, "huggingface")


def _hf_hub_download(card: ModelCard, *, revision, cache_dir, local_files_only) -> Path:
    # Imported here: huggingface_hub reads HF_* variables at import, after the CLI has set them.
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    offline = _env_flag("HF_HUB_OFFLINE") if local_files_only is None else local_files_only
    try:
        return Path(hf_hub_download(
            card.hub_repo_id,
            card.filename,
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=offline,
            endpoint=os.environ.get("HF_ENDPOINT") or None,
            library_name="pgl-zoo",
        ))
    except LocalEntryNotFoundError:
        raise WeightsNotAvailableError(
            f"{card.name}: {card.hub_repo_id}@{revision} is not in the Hugging Face cache"
            + (" and offline mode is on" if offline else " and the Hub could not be reached")
            + "; run `pgl-zoo download --model " + card.name + "` on a connected machine"
        ) from None
    except (HfHubHTTPError, OSError) as exc:
        message = " ".join(str(exc).split())[:200]
        raise WeightsNotAvailableError(f"{card.name}: download from {card.hub_repo_id} failed ({message})") from None


def _verify_or_evict(path: Path, card: ModelCard, revision: str | None) -> None:
    """Check a file from the Hugging Face cache against the card's sha256; if it fails, remove the
    snapshot entry and the blob it points to (so that a retry downloads it again) and raise."""
    actual = sha256_file(path)
    if actual == card.sha256.lower():
        return
    removed = "removed it from the Hugging Face cache"
    try:
        blob = path.resolve() if path.is_symlink() else None
        path.unlink()
        if blob is not None and blob.parent.name == "blobs":
            blob.unlink(missing_ok=True)
    except OSError as exc:
        removed = f"could not remove it from the Hugging Face cache ({exc.strerror or exc})"
    raise ChecksumError(
        f"{card.hub_repo_id}@{revision}/{card.filename} ({path}): sha256 mismatch (expected {card.sha256}, got "
        f"{actual}); the download is corrupt or not the file {card.name} pins, so it was not loaded; {removed}"
    )


def read_state_dict(path: str | Path, card: ModelCard) -> tuple[dict[str, torch.Tensor], str]:
    """Check ``path`` against ``card`` and load it; returns (state, digest).

    In this order, each refusal one line naming the file: the size the card records (before a byte is
    hashed), the sha256 it records (a card without one loads with a warning that says so), then the tensors:
    floating point only (an integer tensor would be cast silently) and finite (NaN or inf weights segment to
    nothing).
    """
    path = Path(path)
    if not path.name.endswith(".safetensors"):
        raise LoadError(f"{path}: only .safetensors weights are loaded (pickle files can run code)")
    size = path.stat().st_size
    if card.size_bytes is not None and size != card.size_bytes:
        raise ChecksumError(f"{path}: {size} bytes, but its card records {card.size_bytes}; not the file the card "
                            "describes, so it was not read")
    if card.sha256:
        digest = verify_sha256(path, card.sha256)
    else:
        digest = sha256_file(path)
        warnings.warn(f"{path}: the card records no sha256, so these weights are loaded unverified "
                      f"(sha256 {digest})", stacklevel=2)
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise LoadError(f"{path}: not a readable safetensors file ({exc})") from None
    for key, tensor in state.items():
        if not tensor.is_floating_point():
            raise LoadError(f"{path}: tensor {key} is {str(tensor.dtype).removeprefix('torch.')}; network weights "
                            "must be floating point")
        if not bool(torch.isfinite(tensor).all()):
            raise LoadError(f"{path}: tensor {key} holds NaN or infinite values; these weights cannot segment")
    return state, digest


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
    """Copy a verified weights file with its card and README into ``out_dir`` (portable folder)."""
    card = resolved.card
    if card.sha256:
        verify_sha256(resolved.path, card.sha256)
    else:
        card = card.replace(sha256=sha256_file(resolved.path))
    card = card.replace(size_bytes=resolved.path.stat().st_size)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(weights_file(out, card), lambda tmp: shutil.copyfile(resolved.path, tmp))
    atomic_write(out / CARD_NAME, lambda tmp: Path(tmp).write_text(card.to_json()))
    atomic_write(out / README_NAME, lambda tmp: Path(tmp).write_text(render_hub_readme(card)))
    return out


def upload_plan(folder: str | os.PathLike) -> list[dict]:
    """The files ``push_to_hub`` would upload from ``folder``, after checking the card's sha256."""
    folder = Path(folder)
    resolved = _from_folder(folder, None, "local folder")
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
    """Refuse to write a portable copy over a folder that is not an earlier copy of the same weights."""
    if overwrite or not folder.exists():
        return
    if folder.is_dir() and not any(folder.iterdir()):
        return
    try:
        own = ModelCard.from_json_file(folder / CARD_NAME)
        if own.name == card.name and card.sha256 and own.sha256 == card.sha256:
            return  # an earlier download of the same weights: rewriting it changes nothing
    except PglZooError:
        pass
    raise OverwriteError(f"{folder}: exists and is not a copy of {card.name} with the same sha256; "
                         "choose another --local-dir or pass --overwrite")


def fetch(
    name: str,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> tuple[Path, bool]:
    """:func:`download`, also saying whether a recorded sha256 was checked (False: none recorded)."""
    card = get_card(name)
    if local_dir is not None:
        _check_local_dir(Path(local_dir) / name, card, overwrite)
    resolved = resolve_weights(card, revision=revision, cache_dir=cache_dir)
    verified = bool(resolved.card.sha256)
    if local_dir is not None:  # export_folder verifies the digest before copying
        return export_folder(resolved, Path(local_dir) / name) / resolved.card.filename, verified
    if verified:
        verify_sha256(resolved.path, resolved.card.sha256)
    return resolved.path, verified


def download(
    name: str,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> Path:
    """Fetch a zoo entry's weights (or find them locally) and verify them.

    Returns the verified file; with ``local_dir``, also writes a portable folder
    ``local_dir/<name>/`` (weights, card, README) that loads with ``weights=`` or via
    ``$PGL_ZOO_WEIGHTS=local_dir`` on a machine without network. An existing ``local_dir/<name>/``
    that is not an earlier copy of the same weights is refused unless ``overwrite``.
    """
    return fetch(name, revision=revision, cache_dir=cache_dir, local_dir=local_dir, overwrite=overwrite)[0]
