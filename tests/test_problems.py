"""Regression and multi-label problems on user files: metrics, training, prediction, reloading."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from bertfit.cli.main import main
from bertfit.data.examples import Columns
from bertfit.data.labels import label_targets
from bertfit.data.readers import read_examples
from bertfit.data.splits import stratify_keys
from bertfit.errors import DataError
from bertfit.evaluation.metrics import (
    multilabel_metrics,
    pearson,
    regression_metrics,
    spearman,
    tune_thresholds,
)
from tests.conftest import FILLER, multi_rows, write_rows
from tests.test_cli import FAST

# ---- metrics on exact numbers ---------------------------------------------------------------


def test_correlations_match_known_values():
    x = [1, 2, 3, 4, 5]
    assert pearson(x, [2, 4, 6, 8, 10]) == pytest.approx(1.0)
    assert spearman(x, [1, 4, 9, 16, 25]) == pytest.approx(1.0)  # monotone, not linear
    assert pearson(x, [1, 4, 9, 16, 25]) < 0.99
    # ties take the mean rank: scipy.stats.spearmanr([1,2,2,3],[1,3,2,4]) = 0.9486832980505138
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(0.9486832980505138)
    assert pearson([1, 1, 1], [1, 2, 3]) == 0.0  # undefined -> 0, not NaN
    m = regression_metrics([0.0, 1.0, 2.0], np.array([[0.0], [1.0], [4.0]]))
    assert m["mse"] == pytest.approx(4 / 3) and m["n"] == 3


def test_multilabel_metrics_and_thresholds():
    y_true = np.array([[1, 0], [1, 1], [0, 1], [0, 0]])
    y_pred = np.array([[1, 0], [1, 0], [0, 1], [1, 0]])
    m = multilabel_metrics(y_true, y_pred, ["a", "b"])
    # a: tp 2, fp 1, fn 0 -> f1 0.8; b: tp 1, fn 1 -> f1 2/3; micro: tp 3, fp 1, fn 1 -> 0.75
    assert m["per_class"]["a"]["f1"] == pytest.approx(0.8)
    assert m["per_class"]["b"]["f1"] == pytest.approx(2 / 3)
    assert m["micro_f1"] == pytest.approx(0.75)
    assert m["macro_f1"] == pytest.approx((0.8 + 2 / 3) / 2)
    assert m["exact_match"] == pytest.approx(0.5)
    # label b is only ever predicted with p = 0.3: the tuned threshold drops below it
    probs = np.array([[0.9, 0.3], [0.8, 0.3], [0.1, 0.3], [0.2, 0.1]])
    cut = tune_thresholds(np.array([[1, 1], [1, 1], [0, 1], [0, 0]]), probs)
    assert cut[0] == 0.5  # already perfect at 0.5: ties stay at the default
    assert 0.1 < cut[1] <= 0.3


@pytest.mark.slow
def test_bootstrap_interval_covers_the_true_rate():
    """In a simulation with a known accuracy of 0.8, about 95% of the intervals contain it."""
    from bertfit.evaluation.metrics import bootstrap_intervals, classification_metrics

    rng = np.random.default_rng(0)
    covered, trials, n = 0, 100, 300
    y_true = np.zeros(n, dtype=int)
    for trial in range(trials):
        y_pred = (rng.random(n) >= 0.8).astype(int)  # each prediction right with p = 0.8
        low, high = bootstrap_intervals(
            lambda i, y_pred=y_pred: classification_metrics(y_true[i], y_pred[i], ["a", "b"]),
            n,
            resamples=300,
            seed=trial,
        )["accuracy"]
        covered += low <= 0.8 <= high
    assert 0.88 <= covered / trials <= 1.0


# ---- readers ----------------------------------------------------------------------------------


def test_multi_label_and_score_labels_are_read(tmp_path):
    tsv = tmp_path / "x.tsv"
    tsv.write_text("text\tlabel\na b\tsport|news\nc d\t\ne f\tnews\n")
    ex = read_examples(tsv, Columns("text", None, "label"), label_kind="multi")
    assert ex.labels == [["sport", "news"], [], ["news"]]
    rows = label_targets(ex.labels, ["news", "sport"], "multi")
    assert rows.tolist() == [[1, 1], [0, 0], [1, 0]]
    jsonl = tmp_path / "x.jsonl"
    jsonl.write_text('{"text": "a", "label": ["x", "y"]}\n{"text": "b", "label": "z;x"}\n')
    ex = read_examples(
        jsonl, Columns("text", None, "label"), label_kind="multi", label_separator=";"
    )
    assert ex.labels == [["x", "y"], ["z", "x"]]
    scores = tmp_path / "s.csv"
    scores.write_text("text,label\na,1.5\nb,4\n")
    ex = read_examples(scores, Columns("text", None, "label"), label_kind="score")
    assert ex.labels == [1.5, 4.0]
    scores.write_text("text,label\na,1.5\nb,high\n")
    with pytest.raises(DataError, match=r"s.csv:3: label 'high' is not a number"):
        read_examples(scores, Columns("text", None, "label"), label_kind="score")


def test_score_split_is_balanced_by_decile():
    keys = stratify_keys([float(i) for i in range(100)], "score")
    assert sorted(set(keys)) == [str(i) for i in range(10)]
    assert keys[0] == "0" and keys[99] == "9"


# ---- end to end ------------------------------------------------------------------------------


def score_rows(n: int, seed: int) -> list[dict]:
    """Learnable regression: the score counts the marker word (0, 1 or 2 times)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        count = rng.randint(0, 2)
        words = rng.choices(FILLER, k=rng.randint(3, 8)) + ["great"] * count
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": float(count)})
    return rows


@pytest.mark.slow
def test_regression_end_to_end(tiny_bert, tmp_path, cache_env, capsys):
    train = write_rows(tmp_path / "train.csv", score_rows(400, 1))
    dev = write_rows(tmp_path / "dev.csv", score_rows(100, 2))
    out = tmp_path / "run"
    args = ["--train", str(train), "--dev", str(dev), "--model", str(tiny_bert)]
    assert main(["train", *args, "--output", str(out), "--regression", *FAST]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["metric"] == "spearman" and results["problem"] == "regression"
    assert results["dev"]["spearman"] > 0.7 and results["dev"]["pearson"] > 0.7
    capsys.readouterr()
    assert main(["evaluate", str(out), "--data", str(dev), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["spearman"] == pytest.approx(results["dev"]["spearman"], abs=1e-6)
    assert main(["predict", str(out), "--text", "great great movie"]) == 0
    high = float(capsys.readouterr().out.split("score:")[1])
    assert main(["predict", str(out), "--text", "a movie"]) == 0
    low = float(capsys.readouterr().out.split("score:")[1])
    assert high > low  # two markers score above none
    inputs = write_rows(tmp_path / "in.tsv", [{"text": "great scene"}, {"text": "old song"}])
    assert (
        main(["predict", str(out), "--input", str(inputs), "--output", str(tmp_path / "p.csv")])
        == 0
    )
    # the input's columns come first (issue 13 item 4), then the predicted score
    assert (tmp_path / "p.csv").read_text().splitlines()[0] == "text,score"

    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.problem_type == "regression" and model.config.num_labels == 1
    # a wrong metric for the problem is refused before training
    code = main(
        ["train", *args, "--output", str(tmp_path / "r2"), "--regression", "--metric", "accuracy"]
    )
    assert code == 2 and "spearman" in capsys.readouterr().err


@pytest.mark.slow
def test_multi_label_end_to_end(tiny_bert, tmp_path, cache_env, capsys):
    train = write_rows(tmp_path / "train.jsonl", multi_rows(400, 1))
    dev_rows = [{**r, "label": "|".join(r["label"])} for r in multi_rows(100, 2)]
    dev = write_rows(tmp_path / "dev.tsv", dev_rows)  # the same labels as a separated string
    out = tmp_path / "run"
    common = ["--train", str(train), "--dev", str(dev), "--model", str(tiny_bert)]
    assert (
        main(["train", *common, "--output", str(out), "--multi-label", "--tune-thresholds", *FAST])
        == 0
    )
    results = json.loads((out / "results.json").read_text())
    assert results["metric"] == "micro_f1"
    assert results["dev"]["micro_f1"] > 0.8 and results["dev"]["exact_match"] > 0.45  # chance: 0.25
    assert set(results["thresholds"]) == {"bad", "good"}
    assert all(0.05 <= t <= 0.95 for t in results["thresholds"].values())
    capsys.readouterr()
    assert main(["predict", str(out), "--text", "great scene and awful music"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("labels: bad, good") and "probabilities:" in printed

    import bertfit

    run = bertfit.load(out, device="cpu")
    (record,) = run.predict("a long story")
    assert set(record["probabilities"]) == {"bad", "good"}
    cut = results["thresholds"]
    assert record["labels"] == [x for x, p in record["probabilities"].items() if p >= cut[x]]
    assert main(["evaluate", str(out), "--data", str(dev), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["micro_f1"] == pytest.approx(results["dev"]["micro_f1"], abs=1e-6)

    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.problem_type == "multi_label_classification"
    assert model.config.num_labels == 2
    with torch.no_grad():  # transformers' own loss for this problem type accepts our targets
        loss = model(
            **{k: torch.tensor([[2, 5, 3]]) for k in ["input_ids"]},
            labels=torch.tensor([[1.0, 0.0]]),
        ).loss
    assert torch.isfinite(loss)


def test_flag_combinations_are_checked(tmp_path, capsys):
    train = write_rows(tmp_path / "t.csv", score_rows(10, 1))
    cases = [
        (["--regression", "--multi-label"], "exclude each other"),
        (["--tune-thresholds"], "--tune-thresholds goes with --multi-label"),
        (["--task", "sst2"], "exactly one of --train FILE or --task NAME"),
        (["--eval-split", "dev"], "--eval-split go with --task"),
    ]
    for extra, message in cases:
        code = main(["train", "--train", str(train), "--output", str(tmp_path / "o"), *extra])
        err = capsys.readouterr().err
        assert code == 2 and message in err and err.count("\n") == 1, (extra, err)
        assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_tensorboard_gets_the_report_scalars(tiny_bert, tmp_path, cache_env):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tests.conftest import marker_rows

    train = write_rows(tmp_path / "train.csv", marker_rows(200, seed=1))
    out = tmp_path / "run"
    args = ["train", "--train", str(train), "--model", str(tiny_bert), "--output", str(out)]
    assert main([*args, "--tensorboard", *FAST]) == 0
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"step/loss", "step/lr", "train/train_loss", "dev/accuracy"} <= tags
    assert len(events.Scalars("dev/accuracy")) == 4  # one per epoch
