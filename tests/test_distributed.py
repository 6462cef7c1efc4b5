"""The distributed layer's pure parts: torchrun's environment, the backend, threads per process,
the global batch and its per-rank slices."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bertfit.errors import ConfigError
from bertfit.training.distributed import (
    World,
    check_global_batch,
    pick_backend,
    rank_slices,
    threads_per_process,
)
from tests.conftest import marker_rows, write_rows


def test_world_from_torchrun_environment():
    assert World.from_env({}) == World(0, 1, 0, 1) and World.from_env({}).is_main
    world = World.from_env(
        {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}
    )
    assert (world.rank, world.size, world.local_rank, world.local_size) == (3, 4, 1, 2)
    assert world.distributed and not world.is_main
    with pytest.raises(ConfigError, match="inconsistent"):
        World.from_env({"RANK": "2", "WORLD_SIZE": "2"})
    with pytest.raises(ConfigError, match="not numbers"):
        World.from_env({"WORLD_SIZE": "two"})


def test_backend_and_threads():
    assert pick_backend("cuda") == "nccl" and pick_backend("cpu") == "gloo"
    assert pick_backend("cuda", "gloo") == "gloo"
    with pytest.raises(ConfigError, match="nccl needs CUDA"):
        pick_backend("cpu", "nccl")
    assert threads_per_process(World(0, 2, 0, 2), cores=2) == 1
    assert threads_per_process(World(0, 4, 0, 2), cores=16) == 8  # two nodes of two
    assert threads_per_process(World(), cores=2) == 2


def test_global_batch_must_split_evenly_and_the_error_names_both_numbers():
    assert check_global_batch(32, 1, 2) == 16
    assert check_global_batch(32, 2, 2) == 8
    with pytest.raises(ConfigError, match=r"--batch-size 30 .* --grad-accum 2 x 4 processes = 8"):
        check_global_batch(30, 2, 4)


def test_slices_balance_padded_tokens_longest_rows_fewer():
    lengths = np.array([60, 10, 12, 11, 58, 9, 10, 12])
    slices = rank_slices(range(8), lengths, 2)
    assert sorted(i for s in slices for i in s) == list(range(8))
    cost = [len(s) * lengths[s].max() for s in slices]
    assert slices[0] == [0, 4] and max(cost) == 120  # the two long rows alone: 2 x 60
    assert rank_slices(range(8), lengths, 2) == slices  # the same on every rank


def test_a_batch_smaller_than_the_world_leaves_empty_slices_not_missing_ones():
    slices = rank_slices([5, 2], np.arange(10) + 3, 4)
    assert len(slices) == 4 and sorted(map(len, slices)) == [0, 0, 1, 1]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(2, 128), min_size=1, max_size=64),
    st.integers(1, 8),
)
def test_slices_are_a_partition_one_per_rank(sizes, world):
    lengths = np.array(sizes)
    slices = rank_slices(list(range(len(sizes))), lengths, world)
    assert len(slices) == world
    assert sorted(i for s in slices for i in s) == list(range(len(sizes)))
    if len(sizes) >= world:
        assert all(slices)  # every rank has rows when there are enough
        # no slice costs more than the cheapest even split of the sorted rows would
        worst = max(len(s) * lengths[s].max() for s in slices)
        order = sorted(sizes, reverse=True)
        even = -(-len(order) // world)
        even_cost = max(len(order[i : i + even]) * order[i] for i in range(0, len(order), even))
        assert worst <= even_cost


def _steps(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "steps.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_two_processes_under_torchrun_train_as_one_does(tiny_bert, tmp_path):
    """Same global batch on 1 process and on 2 (gloo): the same loss at every step and the same
    final weights (fp32; measured: losses equal to 5 decimals, weights within 2e-7)."""
    from safetensors.torch import load_file

    train = write_rows(tmp_path / "train.csv", marker_rows(64, seed=1))
    dev = write_rows(tmp_path / "dev.csv", marker_rows(16, seed=2))
    args = ["train", "--train", str(train), "--dev", str(dev), "--model", str(tiny_bert)]
    args += ["--epochs", "2", "--batch-size", "8", "--lr", "3e-3", "--warmup-ratio", "0"]
    args += ["--max-length", "32", "--no-progress", "--seed", "1", "--precision", "fp32"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run(
        [sys.executable, "-m", "bertfit", *args, "--output", str(tmp_path / "one"), "--threads", "1"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert one.returncode == 0, one.stderr
    port = str(_free_port())
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
         "--master-addr", "127.0.0.1", "--master-port", port,
         "-m", "bertfit", *args, "--output", str(tmp_path / "two")],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr
    assert _steps(tmp_path / "two") == pytest.approx(_steps(tmp_path / "one"), abs=2e-5)
    a, b = (
        load_file(tmp_path / "one" / "model.safetensors"),
        load_file(tmp_path / "two" / "model.safetensors"),
    )
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5
    results = [json.loads((tmp_path / r / "results.json").read_text()) for r in ("one", "two")]
    assert results[0]["dev"]["accuracy"] == results[1]["dev"]["accuracy"]  # dev scored in shards
    assert results[0]["processes"] == 1 and results[1]["processes"] == 2
    assert results[1]["ddp_backend"] == "gloo"
    assert two.stderr.count("done: best dev") == 1  # one writer: rank 0 alone reports
    assert two.stderr.count("epoch 2/2: loss") == 1


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_nproc_starts_torchruns_agent_itself_and_errors_are_said_once(tiny_bert, tmp_path, capfd):
    from safetensors.torch import load_file

    from bertfit.cli.main import main

    train = write_rows(tmp_path / "train.csv", marker_rows(48, seed=1))
    args = ["train", "--train", str(train), "--model", str(tiny_bert), "--epochs", "1"]
    args += ["--batch-size", "8", "--lr", "3e-3", "--max-length", "32", "--no-progress"]
    args += ["--precision", "fp32", "--seed", "1"]
    assert main([*args, "--output", str(tmp_path / "one"), "--threads", "1"]) == 0
    assert main([*args, "--output", str(tmp_path / "two"), "--nproc", "2"]) == 0
    assert _steps(tmp_path / "two") == pytest.approx(_steps(tmp_path / "one"), abs=2e-5)
    a, b = (
        load_file(tmp_path / "one" / "model.safetensors"),
        load_file(tmp_path / "two" / "model.safetensors"),
    )
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5
    capfd.readouterr()
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\n,pos\n")
    argv = ["train", "--train", str(bad), "--model", str(tiny_bert), "--nproc", "2"]
    assert main([*argv, "--output", str(tmp_path / "bad")]) == 2
    err = capfd.readouterr().err  # the workers' stderr too
    assert err.count("bertfit: error:") == 1 and "Traceback" not in err, err
