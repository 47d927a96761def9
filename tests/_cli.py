"""Running the pgl-zoo CLI in the test process (shared by the CLI tests)."""

from __future__ import annotations

import os

from pgl_zoo.cli import main


def call(capsys, *args) -> tuple[int, str, str]:
    """Run the CLI in this process: (exit code, stdout, stderr). ``PGL_ZOO_DEBUG`` is unset meanwhile."""
    env_debug = os.environ.pop("PGL_ZOO_DEBUG", None)
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    finally:
        if env_debug is not None:
            os.environ["PGL_ZOO_DEBUG"] = env_debug
    out = capsys.readouterr()
    return code, out.out, out.err
