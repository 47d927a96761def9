"""Progress bars: live on a terminal, a few lines in a log file.

On a terminal (stderr is a TTY) a bar refreshes as tqdm does. Redirected to a file or a CI log, every
refresh would be one more carriage-return segment (a pretraining run of 500 steps wrote 500), so there
the bar refreshes at most every ``LOG_INTERVAL_S`` seconds, plus its final state. ``PGL_ZOO_PROGRESS_S``
sets that interval (seconds, > 0).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any

LOG_INTERVAL_S = 60.0


def log_interval() -> float:
    """Seconds between refreshes when stderr is not a terminal (``$PGL_ZOO_PROGRESS_S`` or 60)."""
    try:
        value = float(os.environ.get("PGL_ZOO_PROGRESS_S", LOG_INTERVAL_S))
    except ValueError:
        value = LOG_INTERVAL_S
    return value if value > 0 else LOG_INTERVAL_S


def progress_bar(iterable: Iterable | None = None, **kwargs: Any):
    """A tqdm bar (``tqdm.auto``) over ``iterable`` with ``kwargs``; refreshed rarely when not on a terminal
    (there ``set_postfix`` and ``set_description`` wait for the next refresh instead of forcing one)."""
    from tqdm.auto import tqdm

    if _on_terminal():
        return tqdm(iterable, **kwargs)

    class LogBar(tqdm):
        def set_postfix(self, ordered_dict=None, refresh=False, **values):  # noqa: ARG002 - never forced
            super().set_postfix(ordered_dict, refresh=False, **values)

        def set_description(self, desc=None, refresh=False):  # noqa: ARG002 - never forced
            super().set_description(desc, refresh=False)

    kwargs["mininterval"] = max(float(kwargs.get("mininterval", 0.1)), log_interval())
    kwargs["dynamic_ncols"] = False
    return LogBar(iterable, **kwargs)


def _on_terminal() -> bool:
    stream = sys.stderr
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
