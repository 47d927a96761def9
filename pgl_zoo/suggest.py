"""\"Did you mean ...?\" for misspelt names (commands, models), by difflib's similarity ratio."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def close_names(name: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """Up to ``n`` of ``choices`` closest to ``name`` (ratio >= 0.6), best first; case is ignored."""
    choices = list(choices)
    by_lower = {c.lower(): c for c in choices}
    return [by_lower[m] for m in difflib.get_close_matches(name.lower(), list(by_lower), n=n, cutoff=0.6)]


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'a' or 'b'?"`` (empty when nothing is close), to end a one-line error."""
    close = close_names(name, choices)
    if not close:
        return ""
    return "; did you mean " + " or ".join(repr(c) for c in close) + "?"
