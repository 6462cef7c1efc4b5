"""The bi-encoder objectives: their losses, training on the tiny model, the saved run."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bertfit.cli.main import main
from bertfit.models.biencoder import contrastive_loss, cosine_loss
from tests.conftest import FILLER, write_rows
from tests.test_cli import FAST

MARKERS = ["great", "awful", "music", "actor", "song", "ending"]


def test_cosine_loss_is_mse_of_cosines():
    u = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    v = torch.tensor([[1.0, 0.0], [-1.0, -1.0]])
    # cosines 1 and -1 against targets 1 and 0: squared errors 0 and 1
    assert cosine_loss(u, v, torch.tensor([1.0, 0.0])).item() == pytest.approx(0.5)


def test_in_batch_negatives_exclude_duplicates():
    torch.manual_seed(0)
    u, v = torch.randn(4, 8), torch.randn(4, 8)
    v[2] = v[1]  # rows 1 and 2 share their positive text
    text_ids, positive_ids = torch.tensor([0, 1, 2, 3]), torch.tensor([10, 11, 11, 13])
    loss = contrastive_loss(u, v, text_ids, positive_ids, scale=20.0)
    scores = 20.0 * F.normalize(u, dim=-1) @ F.normalize(v, dim=-1).T
    scores[1, 2] = scores[2, 1] = float("-inf")  # the duplicate is not a negative
    assert loss.item() == pytest.approx(F.cross_entropy(scores, torch.arange(4)).item(), rel=1e-5)
    naive = F.cross_entropy(
        20.0 * F.normalize(u, dim=-1) @ F.normalize(v, dim=-1).T, torch.arange(4)
    )
    assert naive.item() > loss.item()
    sym = contrastive_loss(u, v, text_ids, positive_ids, scale=20.0, symmetric=True)
    assert sym.item() == pytest.approx(
        (loss.item() + F.cross_entropy(scores.T, torch.arange(4)).item()) / 2, rel=1e-5
    )


def pair_rows(n: int, seed: int, kind: str) -> list[dict]:
    """Texts whose partner shares a marker word (similar) or not (dissimilar)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        words = lambda: rng.choices([w for w in FILLER if w not in MARKERS], k=rng.randint(3, 6))  # noqa: E731
        m = rng.choice(MARKERS)
        similar = kind == "contrastive" or i % 2 == 0
        other = m if similar else rng.choice([x for x in MARKERS if x != m])
        a, b = words() + [m, m], words() + [other, other]
        rng.shuffle(a)
        rng.shuffle(b)
        row = {"a": " ".join(a), "b": " ".join(b)}
        if kind == "cosine":
            row["label"] = 5.0 if similar else 0.0
        elif kind == "softmax":
            row["label"] = "same" if similar else "different"
        rows.append(row)
    return rows


def pair_training(train, model, out, objective: str) -> list[str]:
    return [
        "train",
        "--train",
        str(train),
        "--text-column",
        "a",
        "--pair-column",
        "b",
        "--model",
        str(model),
        "--output",
        str(out),
        "--objective",
        objective,
    ]


@pytest.mark.parametrize(
    "objective,metric,floor",
    [
        ("cosine", "spearman", 0.5),
        ("contrastive", "recall_at_1", 0.05),  # chance 1/60; 6 markers cap it near 0.1
        ("softmax", "accuracy", 0.7),
    ],
)
@pytest.mark.slow
def test_each_objective_learns_the_marker_task(
    tiny_bert, tmp_path, cache_env, objective, metric, floor
):
    train = write_rows(tmp_path / "train.jsonl", pair_rows(300, 1, objective))
    out = tmp_path / "run"
    args = [*pair_training(train, tiny_bert, out, objective), "--dev-fraction", "0.2", *FAST]
    assert main(args) == 0
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["train_loss"] < lines[0]["train_loss"]
    results = json.loads((out / "results.json").read_text())
    assert results["metric"] == metric and results["dev"][metric] > floor
    meta = json.loads((out / "bertfit.json").read_text())
    assert meta["problem"] == "embedding" and meta["objective"] == objective


@pytest.mark.slow
def test_trained_run_loads_in_sentence_transformers_with_the_same_embeddings(
    tiny_bert, tmp_path, cache_env, capsys
):
    from sentence_transformers import SentenceTransformer

    from bertfit.inference.embed import load_embedder

    train = write_rows(tmp_path / "train.csv", pair_rows(100, 2, "cosine"))
    out = tmp_path / "run"
    args = pair_training(train, tiny_bert, out, "cosine")
    assert main([*args, "--pooling", "cls", "--normalize", *FAST[:2], "--no-progress"]) == 0
    texts = ["great music and a long story", "the ending", "one"]
    ours = load_embedder(str(out), device="cpu", precision="fp32").encode(texts)
    theirs = SentenceTransformer(str(out), device="cpu").encode(texts)
    assert np.abs(ours - theirs).max() < 1e-5
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    capsys.readouterr()
    assert (
        main(
            [
                "evaluate",
                str(out),
                "--data",
                str(train),
                "--text-column",
                "a",
                "--pair-column",
                "b",
                "--json",
            ]
        )
        == 0
    )
    assert set(json.loads(capsys.readouterr().out)) == {"spearman", "pearson", "n", "ci"}
    assert main(["predict", str(out), "--text", "x"]) == 2  # a bi-encoder is not a classifier
    assert "bertfit similarity" in capsys.readouterr().err


@pytest.mark.slow
def test_objective_must_fit_the_task_and_contrastive_keeps_positive_pairs(
    tiny_bert, tmp_path, cache_env, capsys, monkeypatch
):
    from tests.test_tasks import write_snli

    monkeypatch.setenv("BERTFIT_OFFLINE", "1")
    write_snli(tmp_path / "corpora", {"train": 40, "dev": 12, "test": 5}, dashes=2)
    common = [
        "train",
        "--task",
        "snli",
        "--data-dir",
        str(tmp_path / "corpora"),
        "--model",
        str(tiny_bert),
    ]
    out = tmp_path / "run"
    assert main([*common, "--objective", "cosine", "--output", str(out)]) == 2
    assert "needs similarity scores; task snli has class labels" in capsys.readouterr().err
    assert not out.exists()
    assert main([*common, "--objective", "contrastive", "--output", str(out), *FAST]) == 0
    results = json.loads((out / "results.json").read_text())
    snli_rows = [
        json.loads(x)
        for x in (tmp_path / "corpora" / "snli_1.0" / "snli_1.0_train.jsonl")
        .read_text()
        .splitlines()
    ]
    assert results["train_examples"] == sum(r["gold_label"] == "entailment" for r in snli_rows)
