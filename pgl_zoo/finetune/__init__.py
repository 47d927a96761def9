"""Fine-tuning on labelled data: data sets, Dice + CE loss, the training loop, export.

The main entry point is :func:`finetune` with a :class:`FinetuneConfig`.
"""

from __future__ import annotations

from .config import FinetuneConfig
from .trainer import FinetuneResult, finetune

__all__ = ["FinetuneConfig", "FinetuneResult", "finetune"]
