"""compare refuses runs that predict different things, and says what it leaves out."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bertfit.cli.main import main
from tests.test_cli import single_run  # noqa: F401  (the shared trained tiny run)

CLASSES = {"accuracy": 0.8, "macro_f1": 0.79, "mcc": 0.6, "n": 100}


def fake_run(
    path: Path,
    problem: str = "single_label_classification",
    labels=("neg", "pos"),
    dev=None,
    metric: str = "accuracy",
    **meta,
) -> Path:
    """A finished run's files as compare reads them (no model: no --data here)."""
    path.mkdir(parents=True)
    dev = dict(CLASSES if dev is None else dev)
    config = {"train": "train.csv", "max_length": 32, "truncation": "longest-first"}
    record = {"problem": problem, "config": config, "labels": list(labels), **meta}
    record["encoder"] = {"kind": "hf", "name": "tiny", "path": str(path)}
    (path / "bertfit.json").write_text(json.dumps(record))
    results = {
        "metric": metric,
        "dev": dev,
        "dev_ci": {k: [v - 0.1, v + 0.1] for k, v in dev.items()},
    }
    (path / "results.json").write_text(json.dumps(results))
    rows = [{"step": s, "dev": {k: v for k, v in dev.items() if k != "n"}} for s in (5, 10)]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    steps = [{"step": s, "loss": 1.0 / s, "lr": 0.1} for s in range(1, 11)]
    (path / "steps.jsonl").write_text("".join(json.dumps(r) + "\n" for r in steps))
    return path


def refused(tmp_path, capsys, a: Path, b: Path, *extra: str) -> str:
    capsys.readouterr()
    page = tmp_path / "cmp.html"
    assert main(["compare", str(a), str(b), "--output", str(page), *extra]) == 2
    assert not page.exists()
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    return err


def test_different_labels_are_refused_naming_them(tmp_path, capsys):
    a = fake_run(tmp_path / "a")
    b = fake_run(tmp_path / "b", labels=("contradiction", "entailment", "neutral"))
    assert refused(tmp_path, capsys, a, b) == (
        f"bertfit: error: {a} and {b} are not comparable: labels neg, pos vs "
        "contradiction, entailment, neutral"
    )


def test_different_problems_and_objectives_are_refused(tmp_path, capsys):
    a = fake_run(tmp_path / "a")
    scores = {"spearman": 0.8, "pearson": 0.8, "n": 50}
    b = fake_run(tmp_path / "b", "regression", ["score"], scores, "spearman")
    assert refused(tmp_path, capsys, a, b).endswith(
        "not comparable: single-label classification vs regression"
    )
    cos = fake_run(tmp_path / "cos", "embedding", [], scores, "spearman", objective="cosine")
    hits = {"recall_at_1": 0.3, "n": 50}
    con = fake_run(tmp_path / "con", "embedding", [], hits, "recall_at_1", objective="contrastive")
    assert refused(tmp_path, capsys, cos, con).endswith(
        "not comparable: bi-encoder (cosine objective) vs bi-encoder (contrastive objective)"
    )


def test_different_tasks_need_common_examples(tmp_path, capsys):
    a = fake_run(tmp_path / "a", task="sst2")
    b = fake_run(tmp_path / "b", task="imdb")
    err = refused(tmp_path, capsys, a, b)
    assert "not comparable: tasks sst2 vs imdb (their dev sets differ)" in err
    assert "give --data or --task" in err


def test_only_shared_metrics_are_compared_and_the_rest_is_said(tmp_path, capsys):
    a = fake_run(tmp_path / "a", dev={**CLASSES, "f1": 0.81})
    b = fake_run(tmp_path / "b", dev=CLASSES, metric="macro_f1")
    page = tmp_path / "cmp.html"
    capsys.readouterr()
    assert main(["compare", str(a), str(b), "--output", str(page), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["metric"] == "accuracy" and out["compared"] == ["accuracy", "macro_f1", "mcc"]
    assert out["notes"] == [
        f"the runs picked their best model by different metrics (accuracy for {a}, macro_f1 "
        f"for {b}): the curves and the paired test use accuracy, the first run's",
        f"left out, not measured for every run: f1 (in {a})",
    ]
    html = page.read_text()
    assert "nan" not in html.lower() and "left out, not measured for every run: f1" in html
    assert main(["compare", str(a), str(b), "--output", str(page)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("note: the runs picked their best model by different metrics")


@pytest.mark.slow
def test_paired_test_matches_labels_listed_in_another_order(single_run, tmp_path, capsys):  # noqa: F811
    from safetensors.torch import load_file, save_file

    other = tmp_path / "swapped"
    shutil.copytree(single_run["dir"], other)
    meta = json.loads((other / "bertfit.json").read_text())
    meta["labels"] = meta["labels"][::-1]  # the same model, its outputs listed pos, neg
    (other / "bertfit.json").write_text(json.dumps(meta))
    weights = load_file(other / "model.safetensors")
    for key in ("classifier.weight", "classifier.bias"):
        weights[key] = weights[key].flip(0).contiguous()
    save_file(weights, other / "model.safetensors", metadata={"format": "pt"})
    capsys.readouterr()
    args = ["compare", str(single_run["dir"]), str(other), "--data", str(single_run["dev"])]
    assert main([*args, "--output", str(tmp_path / "cmp.html"), "--json"]) == 0
    (test,) = json.loads(capsys.readouterr().out)["paired"]
    assert test["difference"] == pytest.approx(0.0) and test["p_value"] == 1.0
