"""One torch-free answer to "which model does this name or path mean?".

A text that *looks like a path* (it holds a path separator, starts with ``.`` or ``~``, or ends with
``.json``) is a path. Otherwise a registered name wins, even when a file or folder of that name sits
in the working directory (write ``./NAME`` to mean the folder); a text that is neither registered nor
an existing path raises UnknownModelError listing the registered names.

A path may be a model folder (``card.json`` + weights), a fine-tuning run folder (its exported
``model/`` folder is used), a ``card.json`` file, or a weights file (its card is the ``card.json``
beside it, when there is one).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .cards import ModelCard
from .errors import PglZooError
from .registry import get_card, list_models

CARD_NAME = "card.json"
RUN_MODEL_DIR = "model"

__all__ = ["ModelRef", "looks_like_path", "resolve_model", "run_model_folder"]


@dataclass(frozen=True)
class ModelRef:
    """``card``: the registered card, or the card found at ``path`` (None for a bare weights file
    without one). ``path``: the folder or file the user named (None for a registered name)."""

    card: ModelCard | None
    path: Path | None

    @property
    def registered(self) -> bool:
        return self.path is None


def looks_like_path(text: str) -> bool:
    seps = [os.sep] + ([os.altsep] if os.altsep else [])
    return any(s in text for s in seps) or text.startswith((".", "~")) or text.lower().endswith(".json")


def run_model_folder(path: Path) -> Path:
    """A fine-tuning run folder (holding ``model/card.json`` but no card of its own) gives ``model/``."""
    if path.is_dir() and not (path / CARD_NAME).is_file() and (path / RUN_MODEL_DIR / CARD_NAME).is_file():
        return path / RUN_MODEL_DIR
    return path


def resolve_model(name_or_path: str | os.PathLike) -> ModelRef:
    """A registered name, or a folder / card.json / weights file, to its card (see the module docstring)."""
    text = str(name_or_path)
    if not isinstance(name_or_path, os.PathLike) and not looks_like_path(text) and text in list_models():
        return ModelRef(get_card(text), None)
    path = Path(text).expanduser()
    if not (isinstance(name_or_path, os.PathLike) or looks_like_path(text) or path.exists()):
        get_card(text)  # raises UnknownModelError with the registered names
    if not path.exists():
        raise PglZooError(f"{path}: no such file or folder")
    path = run_model_folder(path)
    card_file = path / CARD_NAME if path.is_dir() else (path if path.suffix.lower() == ".json" else
                                                       path.parent / CARD_NAME)
    card = ModelCard.from_json_file(card_file) if card_file.is_file() else None
    if path.is_file() and path.suffix.lower() != ".json" and card is not None and card.filename != path.name:
        card = None  # the card beside it describes another file
    return ModelRef(card, path)
