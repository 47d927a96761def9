"""The parts of a run folder: the run-folder lock, atomic checkpoints and JSON files, reading back
``metrics.jsonl`` and ``config.json`` after a crash, the stop flag (Ctrl-C and SIGTERM) and RNG state.
The frame that puts them together for both trainers (resume policy, warm-up) is :mod:`pgl_zoo.training`.

Torch is imported only by the functions that save, load or seed tensors.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .atomic import RecordingFile, atomic_write, write_failure
from .errors import RunError

LOCK_NAME = ".lock"

__all__ = [
    "RunLock", "StopFlag", "append_line", "atomic_write_json", "read_json", "read_jsonl", "trim_jsonl",
    "save_checkpoint", "load_checkpoint", "load_state", "state_dict_mismatch", "rng_state", "set_rng_state",
]


class RunLock:
    """An exclusive ``fcntl.flock`` on ``RUN/.lock`` for as long as a run writes into RUN.

    A second writer (another ``--resume`` of the same run, in this or another process) is refused at
    once with RunError. The kernel drops the lock when the process dies, so a crash never leaves a
    stale lock behind.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.run_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunError(f"{self.run_dir}: another process is writing this run (locked); wait for it "
                               "to finish or stop it first") from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class StopFlag:
    """First Ctrl-C or SIGTERM (what schedulers send): set ``stop``, so the loop finishes its step,
    checkpoints and stops. A second signal raises KeyboardInterrupt at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.stop = False
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopFlag:
        for sig in self.SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame) -> None:
        if self.stop:
            raise KeyboardInterrupt
        self.stop, self.signal = True, signum

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}


def atomic_write_json(path: str | Path, data: Any, indent: int = 1) -> Path:
    """Write ``data`` as JSON through :func:`pgl_zoo.atomic.atomic_write` (unique temp name, rename)."""
    text = json.dumps(data, indent=indent, default=str) + "\n"
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def read_json(path: str | Path) -> Any:
    """A JSON file; RunError naming the file when it is missing, truncated or not JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise RunError(f"{path}: missing") from None
    except (OSError, ValueError, RecursionError) as exc:
        raise RunError(f"{path}: not readable JSON, truncated or corrupt ({exc})") from None


def read_jsonl(path: str | Path, warn: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """The records of a JSON-lines file. A partial last line (a crash mid-write) is skipped, with a
    warning; an unreadable line elsewhere raises RunError naming the file and line."""
    path = Path(path)
    if not path.exists():
        return []
    text = path.read_text()
    lines = text.splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError:
            if number == len(lines):
                if warn is not None:
                    warn(f"{path}: skipped a partial last line ({len(line)} characters)")
                continue
            raise RunError(f"{path}: line {number} is not JSON (corrupt file)") from None
    return records


def trim_jsonl(path: str | Path, key: str, last: int, warn: Callable[[str], None] | None = None) -> None:
    """Keep the records with ``record[key] <= last`` (those logged before the checkpoint a resumed run
    starts from), dropping a partial last line; rewritten atomically."""
    path = Path(path)
    if not path.exists():
        return
    kept = [r for r in read_jsonl(path, warn) if r.get(key, 0) <= last]
    atomic_write(path, lambda tmp: Path(tmp).write_text("".join(json.dumps(r) + "\n" for r in kept)))


def append_line(path: str | Path, line: str) -> None:
    """Append one line to a log (``metrics.jsonl``); a failed write (full disk) raises WriteError naming the
    file. A line cut short by a crash is skipped by :func:`read_jsonl` on resume."""
    try:
        with open(path, "a") as handle:
            handle.write(line + "\n")
    except OSError as exc:
        raise write_failure(path, exc) from None


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` with torch.save atomically: unique temporary file, fsync, rename. A failed write
    (full disk, file size limit) raises :class:`pgl_zoo.errors.WriteError` naming ``path`` and the reason
    (torch itself would say only "enforce fail at inline_container.cc"); the old file stays."""
    import torch

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            recording = RecordingFile(f)
            try:
                torch.save(state, recording)
            except RuntimeError as exc:
                failure = write_failure(path, exc, recording.error)
                if failure is None:
                    raise
                raise failure from None
            f.flush()
            os.fsync(f.fileno())

    return atomic_write(path, write)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint (tensors and plain types only); RunError naming the file if missing or corrupt."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise RunError(f"{path}: no checkpoint to resume from")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling/zip error means a bad file
        raise RunError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from None


def load_state(module: Any, state: dict[str, Any], what: str) -> None:
    """``module.load_state_dict(state)`` (strict); a mismatch raises RunError naming the keys that differ,
    instead of torch's multi-line message whose first line says only "Error(s) in loading state_dict"."""
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise RunError(f"{what}: {state_dict_mismatch(module, state, exc)}") from None


def state_dict_mismatch(module: Any, state: dict[str, Any], exc: Exception | None = None) -> str:
    """One line naming what does not fit: missing, unexpected and mis-shaped keys (first three each)."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape)]
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", shapes)):
        if items:
            parts.append(f"{len(items)} {label} key(s): {', '.join(items[:3])}" + (", ..." if len(items) > 3 else ""))
    if not parts and exc is not None:
        parts.append(" ".join(str(exc).split())[:300])
    return "weights do not fit the network (" + "; ".join(parts) + ")"


def rng_state() -> dict[str, Any]:
    """The torch RNG states (CPU, and CUDA when present) as tensors."""
    import torch

    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
