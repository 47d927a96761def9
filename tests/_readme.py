"""README.md read as tests read it: its fenced blocks, the shell commands in them, and the tiny settings the
tests append to commands that would train for minutes (shared by tests/test_readme.py and the README main
job's session fixture in tests/conftest.py)."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()

# The first line of the README's main-job block (its first fenced block).
MAIN_JOB = 'pip install torch==2.14.1 torchvision==0.29.1 && pip install -e ".[plot]" && pgl-zoo demo --out demo/'

# Tiny settings for commands that would train for minutes or hours (prefix -> flags appended).
TINY = {
    "pgl-zoo demo": ["--steps", "1"],
    "pgl-zoo pretrain": ["--steps", "1", "--batch-size", "2", "--workers", "0", "--spacing", "4,4,4",
                         "--cache-dir", "cache/"],
    "pgl-zoo finetune --data lungs/": ["--steps-per-epoch", "1", "--spacing", "6,6,6", "--patch-size", "32,64,64"],
}


@dataclass
class Block:
    language: str
    code: str
    line: int

    @property
    def key(self) -> str:
        lines = self.code.splitlines()
        return "\n".join(lines[:3]) if self.code.startswith("import torch") else lines[0]


def fenced_blocks(text: str) -> list[Block]:
    blocks = []
    for match in re.finditer(r"^```(\w*)\n(.*?)^```", text, flags=re.S | re.M):
        blocks.append(Block(match.group(1), match.group(2), text[: match.start()].count("\n") + 1))
    return blocks


def block(first_line: str) -> Block:
    found = [b for b in fenced_blocks(README) if b.key.startswith(first_line)]
    assert len(found) == 1, f"README block starting {first_line!r}: found {len(found)}"
    return found[0]


def shell_commands(code: str) -> list[str]:
    """The commands of a shell block: continuation lines joined, comments dropped, `&&` chains split."""
    joined = re.sub(r"\\\n\s*", " ", code)
    commands = []
    for line in joined.splitlines():
        for part in re.split(r"\s&&\s", line):
            words = shlex.split(part, comments=True)
            if words:
                commands.append(" ".join(shlex.quote(w) for w in words))
    return commands


def cli_args(command: str) -> list[str]:
    """The arguments a ``pgl-zoo ...`` command runs with: optional parts ``[--flag]`` included, and the tiny
    settings of ``TINY`` appended (documented flags of the same command; a later flag overrides an earlier one)."""
    assert command.startswith("pgl-zoo "), command
    args = shlex.split(command.replace("[", "").replace("]", ""))[1:]
    return args + next((flags for prefix, flags in TINY.items() if command.startswith(prefix)), [])


def offline_settings(monkeypatch, base_temp: Path) -> None:
    """A fresh clone's user offline: no network, an empty Hugging Face cache of the run, no $PGL_ZOO_WEIGHTS."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(base_temp / "hf-cache"))
    monkeypatch.delenv("PGL_ZOO_WEIGHTS", raising=False)
