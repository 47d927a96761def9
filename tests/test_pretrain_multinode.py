"""Two "nodes" on 127.0.0.1 (issue 21): ``torchrun --nnodes 2 --nproc-per-node 2`` with a c10d rendezvous,
real processes. The 4 ranks span both nodes, the result equals the 4-process single-node run of the same
steps bit for bit, and after one node is killed (SIGKILL, agent and workers, as a node that loses power)
both nodes resume from the last checkpoint and end exactly where the uninterrupted run ends."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from _seg_helpers import write_micro_pretrain_set

REPO = Path(__file__).resolve().parents[1]
STEPS = 30

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("multinode")
    micro = {k: str(v) for k, v in write_micro_pretrain_set(root).items()}
    script = root / "rank.py"
    script.write_text(
        "import os, sys\n"
        "from pgl_zoo.pretrain import PretrainConfig, pretrain\n"
        "out, resume = sys.argv[1], sys.argv[2] == 'resume'\n"
        f"cfg = PretrainConfig(data=[{micro['data']!r}], out=out, model={micro['card']!r}, batch_size=2,\n"
        f"    steps={STEPS}, workers=0, jobs=1, cache_dir={micro['cache']!r}, device='cpu', checkpoint_every=2,\n"
        "    log_every=1, seed=3, resume=resume)\n"
        "result = pretrain(cfg)\n"
        # one write per line: with PYTHONUNBUFFERED, print() writes each field apart and the ranks' lines mix
        "line = ' '.join(map(str, ['RANK', os.environ['RANK'], os.environ['GROUP_RANK'], os.environ['LOCAL_RANK'],\n"
        "                          os.environ['WORLD_SIZE'], result.step, result.parameter_digest]))\n"
        "os.write(1, (line + '\\n').encode())\n"
    )
    return {**micro, "script": str(script), "root": root}


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def _node(setup: dict, port: int, out: Path, resume: bool) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "2",
           "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", f"pgl-{port}",
           "--max-restarts", "0", setup["script"], str(out), "resume" if resume else "new"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
                            start_new_session=True)


def _ranks(stdout: str) -> dict[str, list[str]]:
    """RANK -> [group rank (node), local rank, world size, step, digest] from the ranks' last lines."""
    return {f[1]: f[2:] for f in (line.split() for line in stdout.splitlines()) if f and f[0] == "RANK"}


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _kill_node(proc: subprocess.Popen) -> str:
    """SIGKILL to a node's agent and every process under it (torchrun starts its workers in new sessions);
    returns what the node wrote to stderr."""
    for pid in [proc.pid, *_descendants(proc.pid)] if proc.poll() is None else []:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return proc.communicate()[1] or ""


_RENDEZVOUS_FAILURE = "Rendezvous"  # in torchrun's error when the two agents could not meet


def _digest_of_single_node_run(setup: dict) -> str:
    out = setup["root"] / "single"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "4", "--master-addr", "127.0.0.1",
           "--master-port", str(_free_port()), setup["script"], str(out), "new"]
    result = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = _ranks(result.stdout)
    assert set(ranks) == {"0", "1", "2", "3"} and len({r[-1] for r in ranks.values()}) == 1
    return ranks["0"][-1]


def test_two_nodes_equal_one_node_and_resume_exactly_after_a_node_is_killed(setup):
    reference = _digest_of_single_node_run(setup)
    out = setup["root"] / "two_nodes"

    # Both nodes start; when the run has logged steps past its first checkpoint, node B dies.
    metrics = out / "metrics.jsonl"
    for attempt in range(3):
        port = _free_port()
        node_a, node_b = _node(setup, port, out, False), _node(setup, port, out, False)
        deadline = time.time() + 300
        while time.time() < deadline and node_a.poll() is None and node_b.poll() is None:
            if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
                break
            time.sleep(0.02)
        if node_a.poll() is None and node_b.poll() is None:
            break
        errors = [_kill_node(p) for p in (node_a, node_b)]
        started = metrics.exists() and metrics.read_text().strip()
        # only a failure to meet (the port taken meanwhile by another process) is tried again, on a new port
        if started or attempt == 2 or not any(_RENDEZVOUS_FAILURE in e for e in errors):
            pytest.fail("a node ended before node B could be killed:\n" + "\n---\n".join(e[-2000:] for e in errors))
    _kill_node(node_b)
    try:
        node_a.communicate(timeout=120)  # its collectives fail: the survivor stops too
    except subprocess.TimeoutExpired:
        _kill_node(node_a)
    assert node_a.returncode != 0
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
    killed_at = int(checkpoint["step"])
    assert 2 <= killed_at < STEPS and killed_at % 2 == 0

    # Both nodes come back with --resume and finish the run.
    port = _free_port()
    node_a, node_b = _node(setup, port, out, True), _node(setup, port, out, True)
    outputs = [p.communicate(timeout=600) for p in (node_a, node_b)]
    # both nodes' ends, since one node's failure shows first as the other's lost rendezvous store
    ends = zip("AB", (node_a, node_b), outputs, strict=True)
    assert node_a.returncode == node_b.returncode == 0, "\n---\n".join(
        f"node {name}: exit {p.returncode}\n{err[-3000:]}" for name, p, (_, err) in ends)
    per_node = [_ranks(stdout) for stdout, _ in outputs]
    ranks = {**per_node[0], **per_node[1]}
    assert set(ranks) == {"0", "1", "2", "3"}  # 4 ranks over two agents, two on each
    assert sorted(len(r) for r in per_node) == [2, 2]
    assert {r[0] for r in per_node[0].values()} != {r[0] for r in per_node[1].values()}  # one group rank each
    assert all(r[2] == "4" and r[3] == str(STEPS) for r in ranks.values())
    assert {r[-1] for r in ranks.values()} == {reference}  # every rank equals the single-node run, bit for bit
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    assert steps == list(range(1, STEPS + 1))  # the killed run's steps after its checkpoint were dropped, none lost
    assert f"at step {killed_at}" in outputs[0][0] + outputs[1][0]
