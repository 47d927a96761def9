"""The one torch-free answer to "which model does this name or path mean?": :func:`resolve_model`.

Every command and API that takes a model (``load_pgl_encoder``, ``pgl_unet3d``,
``load_segmentation_model``, ``pgl-zoo info | segment | finetune | pretrain --model | export |
nnunet-plans``) turns it into one :class:`ModelRef` here: the card, the file or folder, and its kind.

A text that *looks like a path* (it holds a path separator, starts with ``.`` or ``~``, or ends with
``.json``) is a path. Otherwise a registered name wins, even when a file or folder of that name sits
in the working directory (write ``./NAME`` to mean the folder); a text that is neither registered nor
an existing path raises UnknownModelError listing the registered names.

A path may be (its :data:`KINDS`):

* a model folder (``card.json`` + weights);
* a fine-tuning run folder: its exported ``model/`` folder is used;
* a pretraining run folder (``checkpoint.pt``, no card): export it first (``pgl-zoo export``);
* a ``card.json`` file (its weights, when any, lie beside it);
* a weights file: its card is the ``card.json`` beside it when that card names the file.

Where the weights of a registered name come from (portable copy, bundled, Hugging Face cache, Hub)
is :mod:`pgl_zoo.sources`; for a path they are the file or folder itself.
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
PRETRAIN_CHECKPOINT = "checkpoint.pt"

REGISTERED = "registered"
MODEL_FOLDER = "model folder"
RUN_FOLDER = "fine-tuning run folder"
PRETRAIN_RUN = "pretraining run folder"
CARD_FILE = "card file"
WEIGHTS_FILE = "weights file"
KINDS = (REGISTERED, MODEL_FOLDER, RUN_FOLDER, PRETRAIN_RUN, CARD_FILE, WEIGHTS_FILE)

__all__ = ["KINDS", "ModelRef", "looks_like_path", "model_card", "resolve_model"]


@dataclass(frozen=True)
class ModelRef:
    """What a model name or path means.

    ``kind``: one of :data:`KINDS`. ``card``: the registered card, or the card found at ``path``
    (None for a pretraining run, a folder without ``card.json`` or a bare weights file).
    ``path``: the folder or file that holds the model (a fine-tuning run's ``model/`` folder; the
    run folder itself for a pretraining run); None for a registered name, whose weights
    :mod:`pgl_zoo.sources` finds.
    """

    kind: str
    card: ModelCard | None
    path: Path | None

    @property
    def registered(self) -> bool:
        return self.kind == REGISTERED

    @property
    def absolute_path(self) -> str | None:
        """The absolute path (None for a registered name), as a run records it so that it still names the
        same model from another working directory."""
        return None if self.path is None else str(self.path.resolve())

    def require_card(self) -> ModelCard:
        """The card; a path without one raises PglZooError naming it."""
        if self.card is None:
            hint = " (a pretraining run: export it first with `pgl-zoo export`)" if self.kind == PRETRAIN_RUN else ""
            raise PglZooError(f"{self.path}: no {CARD_NAME} describes this model{hint}")
        return self.card


def looks_like_path(text: str) -> bool:
    seps = [os.sep] + ([os.altsep] if os.altsep else [])
    return any(s in text for s in seps) or text.startswith((".", "~")) or text.lower().endswith(".json")


def _path_kind(path: Path) -> tuple[str, Path, Path]:
    """(kind, the path that holds the model, where its card would be) of an existing file or folder."""
    if path.is_dir():
        if (path / CARD_NAME).is_file():
            return MODEL_FOLDER, path, path / CARD_NAME
        if (path / RUN_MODEL_DIR / CARD_NAME).is_file():
            return RUN_FOLDER, path / RUN_MODEL_DIR, path / RUN_MODEL_DIR / CARD_NAME
        if (path / PRETRAIN_CHECKPOINT).is_file():
            return PRETRAIN_RUN, path, path / CARD_NAME
        return MODEL_FOLDER, path, path / CARD_NAME
    if path.suffix.lower() == ".json":
        return CARD_FILE, path, path
    return WEIGHTS_FILE, path, path.parent / CARD_NAME


def resolve_model(name_or_path: str | os.PathLike) -> ModelRef:
    """A registered name, or a path, to one :class:`ModelRef` (see the module docstring for the rules)."""
    text = str(name_or_path)
    is_path_like = isinstance(name_or_path, os.PathLike)
    if not is_path_like and not looks_like_path(text) and text in list_models():
        return ModelRef(REGISTERED, get_card(text), None)
    path = Path(text).expanduser()
    if not (is_path_like or looks_like_path(text) or path.exists()):
        get_card(text)  # raises UnknownModelError with the registered names
    if not path.exists():
        raise PglZooError(f"{path}: no such file or folder")
    kind, path, card_file = _path_kind(path)
    card = ModelCard.from_json_file(card_file) if card_file.is_file() else None
    if kind == WEIGHTS_FILE and card is not None and card.filename != path.name:
        card = None  # the card beside it describes another file
    return ModelRef(kind, card, path)


def model_card(model: str | os.PathLike | ModelCard) -> ModelCard:
    """A card as is, or the card a name or path resolves to; a path without a card raises PglZooError."""
    return model if isinstance(model, ModelCard) else resolve_model(model).require_card()
