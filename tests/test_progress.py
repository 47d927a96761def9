"""Progress bars refresh live on a terminal and rarely in a log file (issue 22: CI's log of the main job was
thousands of carriage returns)."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOOP = ("import time\nfrom pgl_zoo.progress import progress_bar\n"
        "bar = progress_bar(range(40), desc='work')\n"
        "for i in bar:\n    bar.set_postfix(loss=f'{1 / (i + 1):.3f}')\n    time.sleep(0.05)\n")


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PGL_ZOO_PROGRESS_S"}
    return {**env, "PYTHONPATH": str(REPO), **extra}


def test_a_log_file_gets_a_few_refreshes_not_one_per_step(tmp_path):
    log = tmp_path / "log.txt"
    with open(log, "w") as stderr:
        subprocess.run([sys.executable, "-c", LOOP], stderr=stderr, env=_env(), check=True, timeout=120)
    text = log.read_text()
    assert "40/40" in text  # the final state is there
    assert text.count("work:") <= 3, text  # refreshes: the start, the end (at most one between) for 2 s of work


def test_a_terminal_gets_a_live_bar(tmp_path):
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a 100-column terminal
    proc = subprocess.Popen([sys.executable, "-c", LOOP], stderr=follower, stdout=subprocess.DEVNULL, env=_env())
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=120)
    os.close(leader)
    text = b"".join(chunks).decode(errors="replace")
    assert "40/40" in text and text.count("work:") >= 8, text  # live: tqdm's 0.1 s refresh over 2 s of work
