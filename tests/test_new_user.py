"""What a new user hits (issue 13): unusable data stopped before training, labels of another
kind, empty inputs, shareable file permissions, label names and the end-of-run message."""

from __future__ import annotations

import json
import logging
import os
import random
import stat
from pathlib import Path

import pytest

import bertfit
from bertfit.cli.main import main
from tests.conftest import FILLER, marker_rows, write_rows

FAST = ["--epochs", "1", "--batch-size", "8", "--max-length", "32", "--no-progress", "--seed", "1"]


def train_argv(train: Path, model: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--train",
        str(train),
        "--model",
        str(model),
        "--output",
        str(out),
        *FAST,
        *extra,
    ]


def refused(capsys, argv: list[str], *expected: str) -> str:
    """Exit 2 with one error line holding every ``expected`` part, and nothing written."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bertfit: error: "), err
    for part in expected:
        assert part in err[0], err[0]
    return err[0]


@pytest.fixture(scope="module")
def named_run(tiny_bert, tmp_path_factory):
    """A run trained with --label-names on 0/1 labels."""
    root = tmp_path_factory.mktemp("named")
    rows = [
        {"text": r["text"], "label": 1 if r["label"] == "pos" else 0} for r in marker_rows(80, 3)
    ]
    train = write_rows(root / "train.jsonl", rows)
    out = root / "run"
    argv = train_argv(train, tiny_bert, out, "--label-names", "0=negative,1=positive")
    assert main([*argv, "--keep-checkpoints"]) == 0
    return {"dir": out, "train": train, "rows": rows}


# ---- 1: a dev split that comes out empty is known before training ------------------------------


def test_unique_labels_stop_before_training(tiny_bert, tmp_path, capsys):
    rows = [{"text": f"the movie {w}", "label": f"id{i}"} for i, w in enumerate(FILLER[:30])]
    train = write_rows(tmp_path / "ids.csv", rows)
    out = tmp_path / "run"
    refused(
        capsys,
        train_argv(train, tiny_bert, out),
        "every row has a label of its own (30 labels in 30 rows",
        "is --label-column 'label' the label column?",
        "--as-classes",
    )
    assert not out.exists()


def test_labels_with_one_row_each_leave_no_dev_rows(tiny_bert, tmp_path, capsys):
    rows = [{"text": "a great movie", "label": "pos"}, {"text": "the plot", "label": "neg"}]
    train = write_rows(tmp_path / "two.csv", rows)
    out = tmp_path / "run"
    refused(
        capsys,
        train_argv(train, tiny_bert, out),
        "leaves no dev rows: 2 of the 2 labels have a single row",
        "give --dev FILE",
    )
    assert not out.exists()


# ---- 2: labels that are clearly of another kind ------------------------------------------------


@pytest.mark.slow
def test_float_scores_without_regression_are_stopped(tiny_bert, tmp_path, capsys):
    rng = random.Random(0)
    rows = [
        {"text": " ".join(rng.choices(FILLER, k=5)), "label": round(rng.uniform(0, 5), 1)}
        for _ in range(60)
    ]
    train = write_rows(tmp_path / "scores.csv", rows)
    out = tmp_path / "run"
    refused(
        capsys, train_argv(train, tiny_bert, out), "the labels look like scores", "--regression"
    )
    assert not out.exists()
    # the user who means classes says so
    assert main(train_argv(train, tiny_bert, out, "--as-classes", "--dev-fraction", "0.5")) == 0


def test_separated_label_sets_without_multi_label_are_stopped(tiny_bert, tmp_path, capsys):
    labels = ["a|b", "a", "b", "b|c", "c"]
    rows = [{"text": f"the {w} film", "label": labels[i % 5]} for i, w in enumerate(FILLER * 2)]
    train = write_rows(tmp_path / "sets.csv", rows)
    refused(
        capsys,
        train_argv(train, tiny_bert, tmp_path / "run"),
        "look like sets separated by '|'",
        "--multi-label",
    )


def test_small_integer_classes_still_train(tiny_bert, tmp_path):
    rows = [{"text": r["text"], "label": i % 5 + 1} for i, r in enumerate(marker_rows(60, 1))]
    train = write_rows(tmp_path / "stars.csv", rows)
    assert main(train_argv(train, tiny_bert, tmp_path / "run")) == 0


def test_a_single_predicted_class_is_warned_about(tiny_bert, tmp_path, caplog):
    # no learnable signal, one epoch, a tiny rate: the model answers the majority class
    rows = [{"text": "the movie", "label": "pos" if i % 4 else "neg"} for i in range(40)]
    train = write_rows(tmp_path / "flat.csv", rows)
    assert main(train_argv(train, tiny_bert, tmp_path / "run", "--lr", "1e-7")) == 0
    assert "for all" in caplog.text and "dev examples" in caplog.text


# ---- 3: empty inputs are refused everywhere ------------------------------------------------------


@pytest.mark.slow
def test_empty_texts_are_refused(named_run, capsys):
    run_dir = str(named_run["dir"])
    refused(capsys, ["predict", run_dir, "--text", ""], "--text is empty")
    refused(capsys, ["predict", run_dir, "--text", "   "], "--text is empty")
    refused(capsys, ["explain", run_dir, "--text", " "], "--text is empty")
    run = bertfit.load(run_dir)
    with pytest.raises(bertfit.DataError, match="text 2 of 2 is empty"):
        run.predict(["a great film", "  "])


# ---- 8: outputs are readable by others, as an ordinary write makes them -------------------------


def test_outputs_get_the_umask_permissions(named_run, tmp_path):
    old = os.umask(0o022)
    try:
        run = named_run["dir"]
        for name in (
            "model.safetensors",
            "results.json",
            "README.md",
            "report.html",
            "bertfit.json",
            "loss.png",
        ):
            assert stat.S_IMODE((run / name).stat().st_mode) == 0o644, name
        checkpoint = next(run.glob("checkpoint-*"))
        assert stat.S_IMODE(checkpoint.stat().st_mode) == 0o755
        assert stat.S_IMODE((checkpoint / "optimizer.pt").stat().st_mode) == 0o644
        out = tmp_path / "preds.csv"
        assert (
            main(["predict", str(run), "--input", str(named_run["train"]), "--output", str(out)])
            == 0
        )
        assert stat.S_IMODE(out.stat().st_mode) == 0o644
    finally:
        os.umask(old)


# ---- 12, 13: the end of a run, and label names ---------------------------------------------------


def test_label_names_name_predictions_and_config(named_run, tmp_path, capsys):
    run_dir = named_run["dir"]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    assert main(["predict", str(run_dir), "--text", "a great great film"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] in ("label: negative", "label: positive")
    assert "negative" in out and "positive" in out
    # evaluation data may hold the codes (as trained) or the names
    metrics = bertfit.evaluate(
        bertfit.EvaluateConfig(run_dir=str(run_dir), data=str(named_run["train"]))
    )
    assert metrics["labels"] == ["negative", "positive"] and metrics["n"] == 80


def test_bad_label_names_are_config_problems(tiny_bert, tmp_path, capsys):
    train = write_rows(tmp_path / "t.csv", marker_rows(20, 2))
    refused(
        capsys,
        train_argv(train, tiny_bert, tmp_path / "a", "--label-names", "pos"),
        "--label-names: expected LABEL=NAME",
    )
    refused(
        capsys,
        train_argv(train, tiny_bert, tmp_path / "b", "--label-names", "pos=good,bad=worse"),
        "--label-names names 'bad', which the training data does not have",
    )


@pytest.mark.slow
def test_the_end_of_a_run_says_what_was_written_and_what_next(tiny_bert, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="bertfit")
    train = write_rows(tmp_path / "t.csv", marker_rows(40, 4))
    out = tmp_path / "run"
    assert main(train_argv(train, tiny_bert, out)) == 0
    assert f"wrote {out}" in caplog.text and "report.html" in caplog.text
    assert f"next: bertfit predict {out} --text" in caplog.text


# ---- 4: batch predictions carry the input's columns ----------------------------------------------


def test_predictions_carry_the_input_columns(named_run, tmp_path):
    rows = [
        {"id": f"r{i}", "text": t, "label": 1} for i, t in enumerate(["a great film", "the plot"])
    ]
    inputs = write_rows(tmp_path / "in.jsonl", rows)
    run = str(named_run["dir"])
    for ext in ("csv", "jsonl"):
        out = tmp_path / f"p.{ext}"
        assert main(["predict", run, "--input", str(inputs), "--output", str(out)]) == 0
        if ext == "csv":
            header, *lines = out.read_text().splitlines()
            assert header == "id,text,input_label,label,p_negative,p_positive"
            assert [line.split(",")[0] for line in lines] == ["r0", "r1"]
        else:
            records = [json.loads(line) for line in out.read_text().splitlines()]
            assert [r["id"] for r in records] == ["r0", "r1"] and records[0]["input_label"] == 1
    out = tmp_path / "only.csv"
    argv = ["predict", run, "--input", str(inputs), "--output", str(out), "--keep-columns", "id"]
    assert main(argv) == 0
    assert out.read_text().splitlines()[0] == "id,label,p_negative,p_positive"


def test_keep_columns_names_a_missing_column(named_run, tmp_path, capsys):
    inputs = write_rows(tmp_path / "in.csv", [{"text": "a great film"}])
    argv = ["predict", str(named_run["dir"]), "--input", str(inputs), "--keep-columns", "id"]
    refused(capsys, argv, "no column 'id' for --keep-columns; the file has columns: 'text'")


# ---- 10, 11: where outputs go by default, and progress while it works ---------------------------


def test_compare_writes_into_the_first_run_by_default(named_run, tiny_bert, tmp_path, capsys):
    other = tmp_path / "other"
    argv = train_argv(
        named_run["train"], tiny_bert, other, "--label-names", "0=negative,1=positive"
    )
    assert main([*argv, "--seed", "2"]) == 0
    capsys.readouterr()
    cwd = os.getcwd()
    os.chdir(tmp_path)  # nothing may land in the folder the command was started from
    try:
        assert main(["compare", str(named_run["dir"]), str(other)]) == 0
    finally:
        os.chdir(cwd)
    page = named_run["dir"] / "compare.html"
    assert page.is_file() and f"wrote {page}" in capsys.readouterr().out
    assert not (tmp_path / "compare.html").exists()


def test_progress_bars_follow_the_option_and_the_terminal(named_run, capsys, monkeypatch):
    from bertfit.config.fields import show_progress

    monkeypatch.setattr("sys.stderr.isatty", lambda: False, raising=False)
    assert show_progress(None) is False and show_progress(True) is True
    argv = ["predict", str(named_run["dir"]), "--input", str(named_run["train"])]
    assert main([*argv, "--progress"]) == 0
    assert "predicting 80 rows" in capsys.readouterr().err
    assert main([*argv, "--no-progress"]) == 0
    assert "predicting" not in capsys.readouterr().err
