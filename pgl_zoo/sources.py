"""Where a registered model's weights are on this machine, in the order pgl-zoo looks. No torch import.

This is the one statement of the search order. For a registered name (see :mod:`pgl_zoo.resolve`),
:func:`pgl_zoo.weights.resolve_weights` loads from the first of:

1. an explicit file or folder given by the user (``weights=``, ``--weights``), before everything below;
2. ``portable``: ``$PGL_ZOO_WEIGHTS/<name>/``, portable copies written by ``pgl-zoo download --local-dir``;
3. ``bundled``: ``pgl_zoo/bundled/<name>/``, the copy shipped inside the package;
4. ``cached``: the Hugging Face cache (``HF_HUB_CACHE`` or ``cache_dir=``) at the card's pinned revision
   (a file cached at a pinned commit is used without calling the Hub at all);
5. ``remote only``: the Hub, at the card's pinned revision (a download, ``HF_ENDPOINT``; refused under
   ``HF_HUB_OFFLINE``);

and ``none`` when the weights are not published (or a bundled copy is missing). :func:`locate`
implements steps 2-5 from the disk only (no network): ``resolve_weights`` acts on its answer, and
``pgl-zoo list`` shows it. A name or path given as the model itself is a path's own weights
(:mod:`pgl_zoo.resolve`), never searched for.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .cards import BUNDLED, ModelCard

ENV_WEIGHTS_DIR = "PGL_ZOO_WEIGHTS"
BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"
CARD_NAME = "card.json"

PORTABLE = "portable"
CACHED = "cached"
REMOTE_ONLY = "remote only"
NOWHERE = "none"
PLACES = (PORTABLE, BUNDLED, CACHED, REMOTE_ONLY, NOWHERE)

_COMMIT = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class Location:
    """``place`` is one of :data:`PLACES`; ``path`` the weights file when it is on this machine;
    ``folder`` the copy's folder (with its ``card.json``) for ``portable`` and ``bundled``."""

    place: str
    path: Path | None = None
    folder: Path | None = None

    @property
    def size_bytes(self) -> int | None:
        return self.path.stat().st_size if self.path is not None and self.path.is_file() else None


def is_commit(revision: str | None) -> bool:
    """True for a full 40-hex commit id (a pinned revision), False for a branch or tag name."""
    return bool(revision) and bool(_COMMIT.match(str(revision)))


def _local_folder(card: ModelCard) -> tuple[str, Path] | None:
    """The first folder that holds a copy of ``card``'s weights, as (``portable`` or ``bundled``, folder)."""
    env_dir = os.environ.get(ENV_WEIGHTS_DIR)
    if env_dir and (Path(env_dir) / card.name / CARD_NAME).is_file():
        return PORTABLE, Path(env_dir) / card.name
    if (BUNDLED_DIR / card.name / CARD_NAME).is_file():
        return BUNDLED, BUNDLED_DIR / card.name
    return None


def cached_file(
    card: ModelCard, revision: str | None = None, cache_dir: str | os.PathLike | None = None
) -> Path | None:
    """``card``'s weights file in the Hugging Face cache at ``revision`` (default: the card's), or None.

    Reads the cache folder only (``huggingface_hub.try_to_load_from_cache``); never the network.
    """
    if not card.hub_repo_id:
        return None
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(card.hub_repo_id, card.filename, cache_dir=cache_dir,
                                   revision=revision or card.revision)
    return Path(found) if isinstance(found, str) and Path(found).is_file() else None


def locate(card: ModelCard, cache_dir: str | os.PathLike | None = None, revision: str | None = None) -> Location:
    """Where ``card``'s weights would be loaded from now (steps 2-5 of the module docstring; no network).

    ``revision``: the Hub revision to look for in the cache (default: the card's pinned one).
    """
    local = _local_folder(card)
    if local is not None:
        place, folder = local
        return Location(place, folder / card.filename, folder)
    if card.status == BUNDLED or not card.has_weights or not card.hub_repo_id:
        return Location(NOWHERE)
    cached = cached_file(card, revision, cache_dir)
    return Location(CACHED, cached) if cached is not None else Location(REMOTE_ONLY)
