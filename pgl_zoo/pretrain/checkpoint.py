"""Training checkpoints: written atomically, loaded with ``torch.load(weights_only=True)``.

A checkpoint is written to a temporary file in the same folder, flushed to disk, then renamed over
``checkpoint.pt``: a write cut short (crash, full disk, Ctrl-C) never replaces a good checkpoint.
Everything stored is tensors or plain Python types (RNG states as uint8 tensors). The functions live
in :mod:`pgl_zoo.runs`, shared with fine-tuning.
"""

from __future__ import annotations

from ..runs import load_checkpoint, rng_state, save_checkpoint, set_rng_state

CHECKPOINT_NAME = "checkpoint.pt"

__all__ = ["CHECKPOINT_NAME", "load_checkpoint", "save_checkpoint", "rng_state", "set_rng_state"]
