"""What pgl-zoo tells the user while it works, and where each kind of message goes: the one home for output.

=================  =================================================  ==========================================
function           what it is for                                     where it goes
=================  =================================================  ==========================================
:func:`say`        a command's or a run's own lines: results, files   stdout, flushed at once (a log file shows
                   written, "epoch 3/20 ...", "done at step 500"      each line when it happens)
:func:`warn`       a problem with the user's data or options that    ``warning: ...`` on stderr
                   the work survives (a skipped file, a padded scan)
:func:`error`      the one line a failed command ends with            ``error: ...`` on stderr (``pgl_zoo.cli``)
:func:`caveat`     a caveat of a Python API result that a caller may  Python's ``warnings`` (filterable); the CLI
                   filter or make an error (unverified weights,       shows it as one ``warning: ...`` line
                   torch.compile's fallback, a class with no code)    (:func:`warnings_as_lines`)
:func:`report`     a model's load report (what was loaded, missing)   the ``pgl_zoo`` logger at INFO: silent
                                                                      unless the caller turns logging on
=================  =================================================  ==========================================

Failures are exceptions (:class:`pgl_zoo.errors.PglZooError` and its kinds); only ``pgl_zoo.cli`` turns them
into text. Progress bars are :mod:`pgl_zoo.progress`.
"""

from __future__ import annotations

import logging
import warnings

import click

logger = logging.getLogger("pgl_zoo")

__all__ = ["caveat", "error", "logger", "report", "say", "warn", "warnings_as_lines"]


def say(text: str, err: bool = False) -> None:
    """A line of output on stdout (``err``: stderr, for a line that is not the command's result), flushed."""
    click.echo(text, err=err)


def warn(text: str) -> None:
    """``warning: text`` on stderr: a problem the work survives."""
    click.echo(f"warning: {text}", err=True)


def error(text: str, prefix: str = "error") -> None:
    """``prefix: text`` on stderr: the last line of a failed command (``aborted``/``interrupted`` with no text)."""
    click.echo(f"{prefix}: {text}" if text else prefix, err=True)


def caveat(text: str, category: type[Warning] = UserWarning, stacklevel: int = 2) -> None:
    """A caveat of an API result, through :func:`warnings.warn`; ``stacklevel`` as :func:`warnings.warn` would
    take it in the calling function (2: the line that called that function)."""
    warnings.warn(text, category, stacklevel=stacklevel + 1)


def report(text: str) -> None:
    """A load report on the ``pgl_zoo`` logger (INFO)."""
    logger.info(text)


def warnings_as_lines() -> None:
    """Show Python warnings as one ``warning: ...`` line on stderr (the CLI's form), not file:line + source."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ARG001
        warn(" ".join(str(message).split()))

    warnings.showwarning = show
