"""The read side of weights: find a model's weights file, verify it, read it (no file is written here).

Where a registered model's weights come from, and in which order, is :mod:`pgl_zoo.sources`
(:func:`resolve_weights` acts on :func:`pgl_zoo.sources.locate`); what a name or path means is
:mod:`pgl_zoo.resolve`. Writing weights (a model folder, a portable copy, a Hub upload) is
:mod:`pgl_zoo.publish`.

The sha256 recorded in the card is checked before any byte is deserialised, once per file: a file
fetched from the Hub (or found in its cache) is checked when it is found, and one that fails is
removed from the cache, so that the next attempt downloads it again instead of failing on the same
bytes; any other file is checked when it is read (:func:`read_state_dict`) or copied.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from .cards import BUNDLED, ModelCard
from .errors import ChecksumError, LoadError, PglZooError, WeightsNotAvailableError
from .hashing import sha256_file, verify_sha256
from .messages import caveat
from .registry import get_card
from .resolve import WEIGHTS_FILE, ModelRef, resolve_model
from .sources import BUNDLED_DIR, CACHED, CARD_NAME, ENV_WEIGHTS_DIR, NOWHERE, PORTABLE, is_commit, locate

# The card fields that decide what a network computes from a scan; descriptive fields (summary, notes,
# status, training, evaluation) may differ in a copy, the registered card is used either way.
USAGE_FIELDS = ("arch", "modality", "preprocessing", "patch_size_zyx", "architecture", "in_channels", "contents",
                "task", "num_classes", "label_names", "filename")
SOURCE_LABELS = {PORTABLE: f"${ENV_WEIGHTS_DIR}", BUNDLED: "bundled"}  # LoadReport.source of a local copy


@dataclass(frozen=True)
class ResolvedWeights:
    """A weights file on disk, the card describing it, and where it was found.

    ``verified_sha256``: the digest already checked against ``card.sha256`` when the file was found
    (a Hub download or cached file), so that it is not hashed again; None when not checked yet.
    """

    path: Path
    card: ModelCard
    source: str
    verified_sha256: str | None = None

    def verify(self) -> str | None:
        """The file's sha256, checked against the card's (hashing it only if not done when it was found);
        None when the card records no sha256. Raises ChecksumError naming the file on a mismatch."""
        if not self.card.sha256:
            return None
        return self.verified_sha256 or verify_sha256(self.path, self.card.sha256)


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _from_folder(folder: Path, card: ModelCard | None, source: str) -> ResolvedWeights:
    """``card``'s weights file in ``folder`` (``card``: the folder's own, else the registered one named)."""
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
    found = _from_folder(folder, ModelCard.from_json_file(folder / CARD_NAME), source)
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


def _at_path(ref: ModelRef, card: ModelCard | None) -> ResolvedWeights:
    """The weights at a path the user named: as the model itself (``card`` None) or as ``weights=`` for
    the registered ``card``. A folder's (or a weights file's) own card wins over ``card``."""
    if ref.path.is_dir():
        return _from_folder(ref.path, ref.card or card, "local folder")
    if ref.kind == WEIGHTS_FILE and ref.card is not None:
        return ResolvedWeights(ref.path, ref.card, "explicit file")
    if card is None:
        raise PglZooError(f"{ref.path}: a bare weights file needs a model name or a {CARD_NAME} beside it")
    # The user chose this file over the registered one: the registry's digest does not describe it.
    # The load report gives its digest and says it was not verified against a record.
    return ResolvedWeights(ref.path, card.replace(sha256=None, size_bytes=None), "explicit file")


def resolve_weights(
    model: str | os.PathLike | ModelCard | ModelRef,
    weights: str | os.PathLike | None = None,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool | None = None,
) -> ResolvedWeights:
    """Find the weights file for ``model``: a registered name, a card, a folder/file path
    (:func:`pgl_zoo.resolve.resolve_model`), or what that function returned.

    A path is its own weights (``weights`` is then ignored); otherwise ``weights`` (a file or folder)
    wins, else the search order of :mod:`pgl_zoo.sources`. Raises WeightsNotAvailableError with a
    one-line explanation when nothing is found.
    """
    if isinstance(model, ModelCard):
        card = model
    else:
        ref = model if isinstance(model, ModelRef) else resolve_model(model)
        if not ref.registered:
            return _at_path(ref, None)
        card = ref.card
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.exists():
            raise WeightsNotAvailableError(f"{path}: no such file or folder")
        return _at_path(resolve_model(path), card)
    where = locate(card, cache_dir=cache_dir, revision=revision)
    if where.folder is not None:
        return _registered_folder(where.folder, card, SOURCE_LABELS[where.place])
    if where.place == NOWHERE:
        raise WeightsNotAvailableError(
            f"{card.name}: bundled weights are missing from {BUNDLED_DIR / card.name}; reinstall pgl-zoo"
            if card.status == BUNDLED else
            f"{card.name}: weights {card.status}; pass weights=PATH (or --weights) to load your own, "
            "or pretrained=False for the untrained architecture"
        )
    revision = revision or card.revision
    # A file cached at a pinned commit cannot change: use it without calling huggingface_hub, which
    # would still contact the endpoint (its user-agent telemetry fetches a registry once a day).
    path = where.path if where.place == CACHED and is_commit(revision) else None
    if path is None:
        path = _hf_hub_download(card, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only)
    digest = _verify_or_evict(path, card, revision) if card.sha256 else None
    return ResolvedWeights(path, card, "huggingface", digest)


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


def _verify_or_evict(path: Path, card: ModelCard, revision: str | None) -> str:
    """Check a file from the Hugging Face cache against the card's sha256 and return the digest; if it
    fails, remove the snapshot entry and the blob it points to (so that a retry downloads it again) and raise."""
    actual = sha256_file(path)
    if actual == card.sha256.lower():
        return actual
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


def read_state_dict(
    path: str | Path, card: ModelCard, *, verified_sha256: str | None = None
) -> tuple[dict[str, torch.Tensor], str]:
    """Check ``path`` against ``card`` and load it; returns (state, digest).

    In this order, each refusal one line naming the file: the size the card records (before a byte is
    hashed), the sha256 it records (a card without one loads with a warning that says so), then the tensors:
    floating point only (an integer tensor would be cast silently) and finite (NaN or inf weights segment to
    nothing). ``verified_sha256``: the digest :func:`resolve_weights` already checked against the card
    (``ResolvedWeights.verified_sha256``): the file is not hashed a second time.
    """
    path = Path(path)
    if not path.name.endswith(".safetensors"):
        raise LoadError(f"{path}: only .safetensors weights are loaded (pickle files can run code)")
    size = path.stat().st_size
    if card.size_bytes is not None and size != card.size_bytes:
        raise ChecksumError(f"{path}: {size} bytes, but its card records {card.size_bytes}; not the file the card "
                            "describes, so it was not read")
    if card.sha256:
        checked = verified_sha256 is not None and verified_sha256 == card.sha256.lower()
        digest = verified_sha256 if checked else verify_sha256(path, card.sha256)
    else:
        digest = sha256_file(path)
        caveat(f"{path}: the card records no sha256, so these weights are loaded unverified "
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


def download(
    name: str, *, revision: str | None = None, cache_dir: str | os.PathLike | None = None
) -> Path:
    """A registered model's weights file, found in the order of :mod:`pgl_zoo.sources` (fetched into the
    Hugging Face cache when only the Hub has it) and verified against the card's sha256 (once).

    ``pgl-zoo download`` calls it; ``pgl-zoo download --local-dir`` calls
    :func:`pgl_zoo.publish.portable_copy` instead.
    """
    resolved = resolve_weights(get_card(name), revision=revision, cache_dir=cache_dir)
    resolved.verify()
    return resolved.path
