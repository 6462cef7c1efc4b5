"""Two nodes: two torchrun agents meeting through the c10d rendezvous, as on two machines (here
both on this one, over loopback and gloo), train as one process does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid

import pytest

from tests.conftest import free_port, marker_rows, step_losses, write_rows

TIMEOUT = 300  # seconds for each command: a rendezvous that never completes fails the test


def _run_all(commands: list[list[str]], env: dict) -> list[subprocess.CompletedProcess]:
    """Start every command at once (the agents wait for each other) and wait for all; on
    timeout each one's process group (the agent and its workers) is killed."""
    procs = [
        subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
            start_new_session=True,
        )
        for command in commands
    ]  # fmt: skip
    done = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=TIMEOUT)
            done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return done


@pytest.mark.slow
def test_two_nodes_under_c10d_rendezvous_train_as_one_process_does(tiny_bert, tmp_path):
    """The README's two-node command with one process per node: both agents are given the same
    endpoint; the first to bind it hosts the rendezvous store and the other joins as a client
    (torch's c10d backend falls back to client when the port is taken). Only global rank 0
    writes the shared --output; both nodes' first process tokenise into the same cache."""
    train = write_rows(tmp_path / "train.csv", marker_rows(64, seed=1))
    dev = write_rows(tmp_path / "dev.csv", marker_rows(16, seed=2))
    args = ["train", "--train", str(train), "--dev", str(dev), "--model", str(tiny_bert)]
    args += ["--epochs", "2", "--batch-size", "8", "--lr", "3e-3", "--warmup-ratio", "0"]
    args += ["--max-length", "32", "--no-progress", "--seed", "1", "--precision", "fp32"]
    args += ["--threads", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run(
        [sys.executable, "-m", "bertfit", *args, "--output", str(tmp_path / "one")],
        capture_output=True, text=True, env=env, timeout=TIMEOUT,
    )  # fmt: skip
    assert one.returncode == 0, one.stderr
    agent = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
        "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{free_port()}",
        "--rdzv-id", uuid.uuid4().hex, "-m", "bertfit", *args, "--output", str(tmp_path / "two"),
    ]  # fmt: skip
    nodes = _run_all([agent, agent], env)
    for node in nodes:
        assert node.returncode == 0, node.stderr
    assert step_losses(tmp_path / "two") == pytest.approx(step_losses(tmp_path / "one"), abs=2e-5)
    results = [json.loads((tmp_path / r / "results.json").read_text()) for r in ("one", "two")]
    assert results[1]["processes"] == 2 and results[1]["ddp_backend"] == "gloo"
    assert (results[1]["global_batch"], results[1]["per_process_batch"]) == (8, 4)
    assert results[0]["dev"]["accuracy"] == results[1]["dev"]["accuracy"]
    said = "".join(node.stderr for node in nodes)
    assert said.count("done: best dev") == 1  # one writer across both nodes
    card = (tmp_path / "two" / "README.md").read_text()
    assert "| processes | 2 (DDP over gloo) |" in card
    assert "| per-process batch | 4 examples per forward pass |" in card
    assert not list((tmp_path / "two").rglob("*.tmp"))  # no half-written file left by anyone
