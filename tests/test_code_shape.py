"""Code shape of the package (issue 22): no function or method in ``pgl_zoo/`` longer than 60 lines.

A function's length runs from its ``def`` line to the last line of its body (``end_lineno``),
docstring and comments included. Decorators are not counted, so a click command's option list
(its stack of ``@click.option`` lines) never makes a command "long"; its body does. Nested
functions are measured on their own and also count toward the function that holds them.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "pgl_zoo"
MAX_LINES = 60


def long_functions(root: Path, max_lines: int = MAX_LINES) -> list[str]:
    """``path:line name (n lines)`` for every function or method under ``root`` longer than ``max_lines``."""
    found = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > max_lines:
                    found.append(f"{path.relative_to(root.parent)}:{node.lineno} {node.name} ({n} lines)")
    return found


def test_no_function_over_60_lines():
    found = long_functions(PACKAGE)
    assert not found, f"functions over {MAX_LINES} lines (def line to end of body):\n" + "\n".join(found)


def test_decorators_do_not_count(tmp_path):
    """A click-style option list above a short body is not a long function; a long body is."""
    options = "".join(f"@click.option('--o{i}')\n" for i in range(80))
    short = options + "def cmd():\n" + "    x = 1\n" * 58 + "    return x\n"
    long = "def big():\n" + "    x = 1\n" * 60 + "    return x\n"
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text(short + "\n\n" + long)
    found = long_functions(tmp_path / "pkg")
    big_line = short.count("\n") + 3  # two blank lines after `cmd`
    assert found == [f"pkg/a.py:{big_line} big (62 lines)"], found
