"""The contrastive objective across processes: each rank's anchors meet the whole global batch's
positives (gathered with gradients), so share-weighted and summed over the ranks the loss and
its gradients are those of one process on the whole batch."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import free_port, step_losses, train_in_one_and_two_processes, write_rows

# rows 0 and 6 share their text, rows 1 and 4 their positive, on different ranks below
TEXTS, POSITIVES = [0, 1, 2, 3, 4, 5, 0, 7], [10, 11, 12, 13, 11, 15, 16, 17]
# name: (rows of rank 0, rows of rank 1, text ids, positive ids, symmetric); 8 rows in all
CASES = {
    "even": ([5, 0, 3, 6], [7, 1, 2, 4], range(8), range(10, 18), False),
    "unequal": ([5, 0, 3], [7, 1, 2, 6, 4], range(8), range(10, 18), False),
    "symmetric": ([5, 0, 3], [7, 1, 2, 6, 4], range(8), range(10, 18), True),
    "duplicates": ([0, 1, 2], [3, 4, 5, 6, 7], TEXTS, POSITIVES, False),
    "duplicates symmetric": ([0, 1, 2], [3, 4, 5, 6, 7], TEXTS, POSITIVES, True),
    "rank 1 empty": ([2, 0, 1, 3, 4, 5, 6, 7], [], range(8), range(10, 18), True),
    "rank 0 empty": ([], [2, 0, 1, 3, 4, 5, 6, 7], TEXTS, POSITIVES, False),
}
WIDTH, DEPTH, SCALE = 6, 4, 20.0


def _batch(name: str):
    """The case's inputs (fp64, leaves) and a small shared linear encoder, the same on every
    rank."""
    generator = torch.Generator().manual_seed(sorted(CASES).index(name))
    x_a, x_b = (torch.randn(8, WIDTH, generator=generator, dtype=torch.float64) for _ in "ab")
    encoder = torch.nn.Linear(WIDTH, DEPTH, dtype=torch.float64)
    with torch.no_grad():
        encoder.weight.copy_(torch.randn(DEPTH, WIDTH, generator=generator, dtype=torch.float64))
        encoder.bias.copy_(torch.randn(DEPTH, generator=generator, dtype=torch.float64))
    _, _, text_ids, positive_ids, _ = CASES[name]
    ids = torch.tensor(list(text_ids)), torch.tensor(list(positive_ids))
    return x_a.requires_grad_(), x_b.requires_grad_(), encoder, ids


def _gradients(x_a, x_b, encoder) -> dict[str, torch.Tensor]:
    named = {"x_a": x_a, "x_b": x_b, **dict(encoder.named_parameters())}
    return {k: t.grad if t.grad is not None else torch.zeros_like(t) for k, t in named.items()}


def _one_process(name: str) -> tuple[float, dict]:
    from bertfit.models.biencoder import contrastive_loss

    *_, symmetric = CASES[name]
    x_a, x_b, encoder, (text_ids, positive_ids) = _batch(name)
    loss = contrastive_loss(encoder(x_a), encoder(x_b), text_ids, positive_ids, SCALE, symmetric)
    loss.backward()
    return loss.item(), _gradients(x_a, x_b, encoder)


def _rank(rank: int, port: int, out: str) -> None:
    """One of two gloo processes: every case's share-weighted loss and gradients, summed."""
    import torch.distributed as dist

    from bertfit.models.biencoder import gathered_contrastive_loss
    from bertfit.training.distributed import World

    torch.set_num_threads(1)
    dist.init_process_group("gloo", f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    world, results = World(rank, 2, rank, 2), {}
    for name, (*slices, _, _, symmetric) in CASES.items():
        mine = slices[rank]
        x_a, x_b, encoder, (text_ids, positive_ids) = _batch(name)
        if mine:
            u, v = encoder(x_a[mine]), encoder(x_b[mine])
        else:  # as bi_encoder_batch_loss does: an empty leaf, connected to no weight
            u = v = torch.zeros(0, DEPTH, dtype=torch.float64, requires_grad=True)
        loss = gathered_contrastive_loss(
            world, u, v, text_ids[mine], positive_ids[mine], SCALE, symmetric
        )
        share = len(mine) / 8
        (loss * share).backward()  # the gather's backward is a collective: every rank runs it
        summed = torch.tensor([loss.item() * share], dtype=torch.float64)
        dist.all_reduce(summed)
        gradients = _gradients(x_a, x_b, encoder)
        for gradient in gradients.values():
            dist.all_reduce(gradient)
        results[name] = (float(summed), gradients)
    if rank == 0:
        torch.save(results, out)
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> dict:
    """Every case run once on two gloo processes (one spawn for all, to keep it quick)."""
    import torch.multiprocessing as mp

    out = tmp_path_factory.mktemp("ranks") / "results.pt"
    mp.spawn(_rank, args=(free_port(), str(out)), nprocs=2, join=True)
    return torch.load(out)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_two_ranks_give_the_one_process_loss_and_gradients(two_ranks, name):
    """fp64: equal within 1e-12 (measured: within 1e-15 or so; only the summation order
    differs)."""
    loss, gradients = two_ranks[name]
    expected_loss, expected = _one_process(name)
    assert loss == pytest.approx(expected_loss, rel=1e-12, abs=1e-12)
    for key in expected:
        torch.testing.assert_close(gradients[key], expected[key], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("symmetric", [False, True])
def test_rows_of_a_partition_weighted_by_share_sum_to_the_whole_batch(symmetric):
    """The per-rank loss, without processes: each part's rows against the whole batch."""
    from bertfit.models.biencoder import contrastive_loss, contrastive_loss_of_rows

    x_a, x_b, encoder, (text_ids, positive_ids) = _batch("duplicates")
    u, v = encoder(x_a), encoder(x_b)
    whole = contrastive_loss(u, v, text_ids, positive_ids, SCALE, symmetric)
    parts = [(0, 3), (3, 3), (3, 8)]  # the middle one is empty
    total = sum(
        contrastive_loss_of_rows(
            u[start:end], v, text_ids, positive_ids, start, SCALE, u if symmetric else None
        )
        * (end - start)
        / 8
        for start, end in parts
    )
    torch.testing.assert_close(total, whole, rtol=1e-12, atol=1e-12)
    assert contrastive_loss_of_rows(u[:0], v, text_ids, positive_ids, 3, SCALE).item() == 0.0


def test_one_process_gathers_nothing_and_gives_contrastive_loss():
    from bertfit.models.biencoder import contrastive_loss, gathered_contrastive_loss
    from bertfit.training.distributed import ONE_PROCESS

    x_a, x_b, encoder, ids = _batch("duplicates symmetric")
    u, v = encoder(x_a), encoder(x_b)
    for symmetric in (False, True):
        torch.testing.assert_close(
            gathered_contrastive_loss(ONE_PROCESS, u, v, *ids, SCALE, symmetric),
            contrastive_loss(u, v, *ids, SCALE, symmetric),
            rtol=1e-12,
            atol=1e-12,
        )


@pytest.mark.parametrize("objective", ["cosine", "contrastive", "softmax"])
def test_an_empty_slice_gives_a_zero_loss_that_backpropagates(tiny_bert, objective):
    """What a rank with no rows in a batch gets (with one process, contrastive too)."""
    from types import SimpleNamespace

    import numpy as np

    from bertfit.data.packing import Packed
    from bertfit.models.biencoder import bi_encoder_batch_loss, load_bi_encoder
    from bertfit.models.pooling import Pooling

    model = load_bi_encoder(tiny_bert, Pooling("mean", False, 32), 2, seed=0).train()
    side = Packed(np.array([2, 9, 3]), np.zeros(3, dtype=np.int64), np.array([0, 3]))
    train = {"a": side, "b": side, "a_ids": np.array([0]), "b_ids": np.array([1])}
    train["y"] = np.array([1.0], dtype=np.float32) if objective == "cosine" else np.array([1])
    config = SimpleNamespace(objective=objective, scale=SCALE, symmetric=True)
    loss, correct = bi_encoder_batch_loss(model, train, config, 0, torch.device("cpu"), None)([])
    (loss * 0.0).backward()
    assert loss.item() == 0.0 and correct is None
    assert all(p.grad is None for p in model.parameters())  # reduce_gradients adds zeros


@pytest.mark.slow
def test_two_processes_under_torchrun_train_contrastive_as_one_does(tiny_bert, tmp_path):
    """The same global batch of 16 on 1 process and on 2 (gloo): the same loss at every step and
    the same weights (fp32; measured: losses equal to the 5 decimals recorded, weights within
    2.3e-6). 49 pairs make one batch of a single row, so rank 1 has an empty slice there and
    still takes part in the gathers (the symmetric loss is checked by the tests above)."""
    from safetensors.torch import load_file

    from tests.test_biencoder import pair_rows

    train = write_rows(tmp_path / "pairs.csv", pair_rows(49, 1, "contrastive"))
    dev = write_rows(tmp_path / "dev.csv", pair_rows(16, 2, "contrastive"))
    args = ["train", "--train", str(train), "--dev", str(dev), "--model", str(tiny_bert)]
    args += ["--text-column", "a", "--pair-column", "b", "--objective", "contrastive"]
    args += ["--epochs", "2", "--batch-size", "16", "--lr", "3e-3", "--warmup-ratio", "0"]
    args += ["--max-length", "32", "--no-progress", "--seed", "1", "--precision", "fp32"]
    one, two = train_in_one_and_two_processes(args, tmp_path)
    losses = step_losses(tmp_path / "one")
    assert len(losses) == 8 and 0.0 in losses  # 16, 16, 16 and 1 pairs an epoch, 2 epochs
    assert step_losses(tmp_path / "two") == pytest.approx(losses, abs=2e-5)
    a, b = (load_file(tmp_path / run / "model.safetensors") for run in ("one", "two"))
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5
    results = [json.loads((tmp_path / run / "results.json").read_text()) for run in ("one", "two")]
    assert results[0]["dev"] == results[1]["dev"] and results[1]["processes"] == 2
