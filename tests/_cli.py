"""Running the pgl-zoo CLI in the test process (shared by the CLI tests)."""

from __future__ import annotations

import io
import os
from contextlib import redirect_stderr, redirect_stdout

from pgl_zoo.cli import main


def exit_code(*args) -> int:
    """Run the CLI in this process; its exit code. ``PGL_ZOO_DEBUG`` is unset meanwhile."""
    env_debug = os.environ.pop("PGL_ZOO_DEBUG", None)
    try:
        main([str(a) for a in args])
        return 0
    except SystemExit as exc:
        return exc.code or 0
    finally:
        if env_debug is not None:
            os.environ["PGL_ZOO_DEBUG"] = env_debug


def call(capsys, *args) -> tuple[int, str, str]:
    """Run the CLI in this process: (exit code, stdout, stderr)."""
    code = exit_code(*args)
    out = capsys.readouterr()
    return code, out.out, out.err


def call_captured(*args) -> tuple[int, str, str]:
    """:func:`call` without pytest's ``capsys`` (for fixtures wider than one test, which cannot take it)."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = exit_code(*args)
    return code, out.getvalue(), err.getvalue()


def refused(capsys, *args, fragments=()) -> str:
    """The CLI refuses: non-zero exit, exactly one line on stderr, no traceback, naming the fragments."""
    code, _, err = call(capsys, *args)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code != 0, err
    assert len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert str(fragment) in lines[0], lines[0]
    return lines[0]
