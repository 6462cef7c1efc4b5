"""The distributed layer's pure parts: torchrun's environment, the backend, threads per process,
the global batch and its per-rank slices."""

from __future__ import annotations

import json
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
from tests.conftest import (
    free_port,
    marker_rows,
    step_losses,
    train_in_one_and_two_processes,
    write_rows,
)


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
    one, two = train_in_one_and_two_processes(args, tmp_path)
    assert step_losses(tmp_path / "two") == pytest.approx(step_losses(tmp_path / "one"), abs=2e-5)
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
    assert step_losses(tmp_path / "two") == pytest.approx(step_losses(tmp_path / "one"), abs=2e-5)
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


def test_errors_of_several_processes_are_said_once():
    """Rank 0 says the errors every process meets; another process says only its own (naming
    it); a collective broken by a dead peer says nothing (the peer, or torchrun, does)."""
    from bertfit.errors import DataError, OutOfMemory
    from bertfit.training import failures
    from bertfit.training.failures import ProcessFailure, ReportedError

    def outcome(world, error):
        try:
            with failures.one_line_errors(world):
                raise error
        except Exception as err:  # noqa: BLE001 - what the context manager turned it into
            return err

    main, other = World(0, 2, 0, 2), World(1, 2, 1, 2)
    same = DataError("train.csv, line 3: empty text")
    assert outcome(main, same) is same
    quiet = outcome(other, DataError("train.csv, line 3: empty text"))
    assert isinstance(quiet, ReportedError) and str(quiet) == "" and quiet.exit_code == 2
    alone = outcome(other, OutOfMemory("out of memory on cuda:1"))
    assert str(alone) == "process 1: out of memory on cuda:1" and alone.exit_code == 1
    bug = outcome(other, ValueError("boom"))
    assert isinstance(bug, ProcessFailure) and "in process 1: ValueError: boom" in str(bug)
    one = World()
    assert isinstance(outcome(one, ValueError("boom")), ValueError)  # one process: untouched


def test_a_broken_collective_is_a_peer_failure(monkeypatch):
    from bertfit.training import failures
    from bertfit.training.distributed import is_peer_failure

    gone = RuntimeError("[pair.cc:553] Connection closed by peer [127.0.0.1]:19870")
    assert is_peer_failure(gone) and not is_peer_failure(RuntimeError("shape mismatch"))
    monkeypatch.setattr(failures, "PEER_GRACE_SECONDS", 0)
    with pytest.raises(failures.ReportedError) as caught:
        with failures.one_line_errors(World(0, 2, 0, 2)):
            raise gone
    assert caught.value.exit_code == failures.PEER_FAILED and str(caught.value) == ""


def _node_first_rank(rank: int, port: int, folder: str) -> None:
    import time

    import torch.distributed as dist

    from bertfit.training.distributed import node_first

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        with node_first(World(rank, 2, rank, 2)):
            Path(folder, f"start{rank}").write_text(str(time.monotonic()))
            time.sleep(0.3 if rank == 0 else 0)
            Path(folder, f"end{rank}").write_text(str(time.monotonic()))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_the_first_process_of_a_node_reads_and_tokenises_before_the_others(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_node_first_rank, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    stamp = lambda name: float((tmp_path / name).read_text())  # noqa: E731
    assert stamp("end0") <= stamp("start1")  # rank 1 starts once rank 0's block is done


def test_resuming_on_more_processes_gives_the_new_rank_generators_of_its_own(tmp_path):
    """A checkpoint of one process resumed on two: rank 1 has no saved generators, so it takes
    rank 0's and reseeds torch's for its rank and step (reproducible, unlike rank 0's)."""
    import torch

    from bertfit.training.checkpoint import restore_rng, rng_state
    from bertfit.training.distributed import rank_seed

    torch.manual_seed(5)
    torch.save(rng_state(), tmp_path / "rng.pt")
    expected = torch.rand(3)
    restore_rng(tmp_path, 0)
    assert torch.equal(torch.rand(3), expected)
    restore_rng(tmp_path, 1, rank_seed(1, 1, 40))
    first = torch.rand(3)
    restore_rng(tmp_path, 1, rank_seed(1, 1, 40))
    assert torch.equal(torch.rand(3), first) and not torch.equal(first, expected)
    torch.manual_seed(9)
    torch.save(rng_state(), tmp_path / "rng-rank1.pt")
    own = torch.rand(3)
    restore_rng(tmp_path, 1, rank_seed(1, 1, 40))  # its own saved generators win
    assert torch.equal(torch.rand(3), own)
