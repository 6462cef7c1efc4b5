"""Data in memory through the public API: train, predict, evaluate and embed take a list of dicts,
a pandas DataFrame or a Hugging Face Dataset as they take files, with the same checks and
messages; and Parquet files through the CLI."""

from __future__ import annotations

import csv
import gzip
import io
import json
from pathlib import Path

import numpy as np
import pytest

import bertfit
from bertfit.cli.main import main
from tests.conftest import marker_rows, write_rows

pd = pytest.importorskip("pandas")
datasets = pytest.importorskip("datasets")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

FAST = dict(epochs=1, batch_size=8, max_length=32, lr=3e-3, progress=False, seed=1)
KINDS = ("rows", "DataFrame", "Dataset")


def as_kind(rows: list[dict], kind: str):
    """The same rows as a list of dicts, a pandas DataFrame or a datasets.Dataset."""
    if kind == "rows":
        return [dict(r) for r in rows]
    if kind == "DataFrame":
        return pd.DataFrame(rows)
    return datasets.Dataset.from_list(rows)


def renamed(rows: list[dict], **names: str) -> list[dict]:
    """Rows with columns renamed: ``renamed(rows, text="sentence")``."""
    return [{names.get(k, k): v for k, v in r.items()} for r in rows]


def config(output: Path, model: Path, **extra) -> bertfit.TrainConfig:
    return bertfit.TrainConfig(output=str(output), model=str(model), **(FAST | extra))


@pytest.fixture(scope="module")
def data() -> dict:
    return {"train": marker_rows(40, seed=1), "dev": marker_rows(16, seed=2)}


@pytest.fixture(scope="module")
def runs(tiny_bert, tmp_path_factory, data) -> dict:
    """One single-text run per kind of rows, trained on columns named sentence and y."""
    root = tmp_path_factory.mktemp("memory")
    train = renamed(data["train"], text="sentence", label="y")
    dev = renamed(data["dev"], text="sentence", label="y")
    trained = {}
    for kind in KINDS:
        out = root / kind
        run = bertfit.train(
            config(out, tiny_bert, text_column="sentence", label_column="y"),
            train=as_kind(train, kind),
            dev=as_kind(dev, kind),
        )
        trained[kind] = {"dir": out, "run": run}
    return {"root": root, **trained}


@pytest.fixture(scope="module")
def pair_run(tiny_bert, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("memory-pairs")
    rows = marker_rows(40, seed=3, pair=True)
    out = root / "run"
    bertfit.train(
        config(out, tiny_bert, text_column="premise", pair_column="hypothesis"),
        train=pd.DataFrame(rows),
        dev=marker_rows(12, seed=4, pair=True),
    )
    return {"dir": out, "root": root}


# ---- train -------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_train_on_rows_writes_a_complete_run(runs, kind):
    out = runs[kind]["dir"]
    results = json.loads((out / "results.json").read_text())
    assert results["train_examples"] == 40 and results["dev_examples"] == 16
    assert results["labels"] == ["neg", "pos"]
    meta = json.loads((out / "bertfit.json").read_text())
    assert meta["columns"] == {"text": "sentence", "pair": None, "label": "y"}
    assert isinstance(runs[kind]["run"], type(bertfit.load(out)))


def test_every_kind_of_rows_trains_the_same_run(runs):
    dev = {
        kind: json.loads((runs[kind]["dir"] / "results.json").read_text())["dev"] for kind in KINDS
    }
    assert dev["DataFrame"] == dev["rows"] and dev["Dataset"] == dev["rows"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("side", ["train", "dev"])
def test_a_missing_column_is_one_line_naming_it_and_nothing_is_written(
    tiny_bert, tmp_path, data, kind, side
):
    rows = {"train": data["train"], "dev": data["dev"]}
    rows[side] = renamed(rows[side], text="sentence")
    out = tmp_path / "out"
    with pytest.raises(bertfit.BertfitError) as err:
        bertfit.train(
            config(out, tiny_bert),
            train=as_kind(rows["train"], kind),
            dev=as_kind(rows["dev"], kind),
        )
    holder = {
        "rows": "the rows have",
        "DataFrame": "the DataFrame has",
        "Dataset": "the Dataset has",
    }
    assert str(err.value) == (
        f"<{side} {kind}>: no column 'text' for --text-column; {holder[kind]} columns: "
        "0='sentence', 1='label'"
    )
    assert "\n" not in str(err.value)
    assert not out.exists()


def test_rows_go_through_the_config_checks_too(tiny_bert, tmp_path, data):
    out = tmp_path / "out"
    with pytest.raises(bertfit.ConfigError) as err:
        bertfit.train(
            config(out, tiny_bert, epochs=0, dev_fraction=0.2),
            train=data["train"],
            dev=data["dev"],
        )
    assert "--epochs must be at least 1" in str(err.value)
    assert "give --dev or --dev-fraction, not both" in str(err.value)
    with pytest.raises(bertfit.ConfigError, match="expected a file path, a list of dicts"):
        bertfit.train(config(out, tiny_bert), train={"text": ["a"], "label": ["pos"]})
    assert not out.exists()


# ---- predict, evaluate, embed ------------------------------------------------------------------


PROBE = [
    {"sentence": "great film", "extra": 1},
    {"sentence": "an awful plot and a long story", "extra": 2},
    {"sentence": "one great song", "extra": 3},
]


@pytest.mark.parametrize("kind", KINDS)
def test_predict_rows_equals_predict_texts(runs, kind):
    run = bertfit.load(runs["rows"]["dir"], device="cpu")
    expected = run.predict([r["sentence"] for r in PROBE])
    assert run.predict(as_kind(PROBE, kind)) == expected
    assert runs["rows"]["run"].predict(as_kind(PROBE, kind)) == expected


def test_predict_rows_without_the_text_column_names_it(runs):
    run = bertfit.load(runs["rows"]["dir"], device="cpu")
    with pytest.raises(bertfit.BertfitError, match=r"no column 'sentence' for --text-column"):
        run.predict(pd.DataFrame({"text": ["great film"]}))


def test_predict_no_texts_is_not_an_internal_error(runs):
    """No inputs give no records (or a BertfitError saying so), as an empty DataFrame does."""
    run = bertfit.load(runs["rows"]["dir"], device="cpu")
    try:
        records = run.predict([])
    except bertfit.BertfitError:
        return
    assert records == []


def test_rows_and_a_file_for_the_same_side_are_not_silently_mixed(tiny_bert, tmp_path, data):
    """``train=rows`` beside ``TrainConfig(train=FILE)``: refused, or at least the run does not
    record the file it did not train on."""
    path = write_rows(tmp_path / "train.jsonl", data["train"])
    out = tmp_path / "out"
    try:
        bertfit.train(config(out, tiny_bert, train=str(path)), train=data["train"][:30])
    except bertfit.ConfigError:
        assert not out.exists()
        return
    meta = json.loads((out / "bertfit.json").read_text())
    assert meta["config"]["train"] != str(path)


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_pair_run_predicts_rows_like_texts_and_pairs(pair_run, kind):
    run = bertfit.load(pair_run["dir"], device="cpu")
    rows = [
        {"premise": "a film", "hypothesis": "it was great"},
        {"premise": "the music", "hypothesis": "a long story"},
    ]
    expected = run.predict([r["premise"] for r in rows], [r["hypothesis"] for r in rows])
    assert run.predict(as_kind(rows, kind)) == expected
    assert len(expected) == 2 and all(set(r["probabilities"]) == {"no", "yes"} for r in expected)
    with pytest.raises(bertfit.BertfitError, match=r"no column 'hypothesis' for --pair-column"):
        run.predict(as_kind([{"premise": "a film"}], kind))


@pytest.mark.parametrize("kind", KINDS)
def test_evaluate_rows_equals_evaluate_file(runs, data, tmp_path, kind):
    rows = renamed(data["dev"], text="sentence", label="y")
    path = write_rows(tmp_path / "dev.jsonl", rows)
    run_dir = str(runs["rows"]["dir"])
    from_file = bertfit.evaluate(bertfit.EvaluateConfig(run_dir=run_dir, data=str(path)))
    in_memory = bertfit.evaluate(bertfit.EvaluateConfig(run_dir=run_dir), data=as_kind(rows, kind))
    assert from_file["n"] == 16
    assert json.dumps(in_memory, sort_keys=True) == json.dumps(from_file, sort_keys=True)


def test_evaluate_needs_data_from_somewhere(runs):
    with pytest.raises(bertfit.ConfigError, match="give exactly one of --data FILE or --task NAME"):
        bertfit.evaluate(bertfit.EvaluateConfig(run_dir=str(runs["rows"]["dir"])))


@pytest.mark.parametrize("kind", KINDS)
def test_embedder_encodes_a_column_of_rows_like_texts(tiny_bert, kind):
    embedder = bertfit.load_embedder(str(tiny_bert), device="cpu")
    rows = [{"text": r["sentence"], "other": "x"} for r in PROBE]
    expected = embedder.encode([r["text"] for r in rows])
    assert expected.shape == (3, 32)
    np.testing.assert_array_equal(embedder.encode(as_kind(rows, kind), column="text"), expected)
    renamed_rows = as_kind(renamed(rows, text="body"), kind)
    np.testing.assert_array_equal(embedder.encode(renamed_rows, column="body"), expected)


# ---- Parquet through the CLI -------------------------------------------------------------------


def write_parquet(path: Path, rows: list[dict]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.fixture(scope="module")
def parquet_run(tiny_bert, tmp_path_factory, data) -> dict:
    root = tmp_path_factory.mktemp("parquet")
    train = write_parquet(root / "train.parquet", data["train"])
    dev = write_parquet(root / "dev.parquet", data["dev"])
    out = root / "run"
    args = ["train", "--train", str(train), "--dev", str(dev), "--model", str(tiny_bert)]
    fast = ["--epochs", "1", "--batch-size", "8", "--max-length", "32", "--lr", "3e-3"]
    assert main([*args, "--output", str(out), *fast, "--no-progress", "--seed", "1"]) == 0
    return {"dir": out, "root": root, "dev": dev}


@pytest.mark.slow
def test_train_on_parquet_files(parquet_run, runs):
    results = json.loads((parquet_run["dir"] / "results.json").read_text())
    assert results["train_examples"] == 40 and results["dev_examples"] == 16
    # the same rows as the in-memory runs, under their default column names: the same run
    rows_dev = json.loads((runs["rows"]["dir"] / "results.json").read_text())["dev"]
    assert results["dev"] == rows_dev


def test_predict_parquet_to_parquet_and_gzipped_csv(parquet_run, tmp_path, capsys):
    run, inputs = str(parquet_run["dir"]), str(parquet_run["dev"])
    jsonl = tmp_path / "preds.jsonl"
    assert main(["predict", run, "--input", inputs, "--output", str(jsonl)]) == 0
    expected = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(expected) == 16

    target = tmp_path / "preds.parquet"
    assert main(["predict", run, "--input", inputs, "--output", str(target)]) == 0
    table = pq.read_table(target)
    # the input's columns come first (its gold label as input_label: issue 13 item 4)
    assert table.column_names == ["text", "input_label", "label", "p_neg", "p_pos"]
    assert table.num_rows == 16
    assert table.column("label").to_pylist() == [r["label"] for r in expected]
    assert table.column("p_pos").to_pylist() == pytest.approx(
        [r["probabilities"]["pos"] for r in expected]
    )

    target = tmp_path / "preds.csv.gz"
    argv = ["predict", run, "--input", inputs, "--output", str(target), "--keep-columns", "none"]
    assert main(argv) == 0
    raw = target.read_bytes()
    assert raw[:2] == b"\x1f\x8b"  # gzip's magic number
    rows = list(csv.reader(io.StringIO(gzip.decompress(raw).decode("utf-8"))))
    assert rows[0] == ["label", "p_neg", "p_pos"] and len(rows) == 17
    assert [r[0] for r in rows[1:]] == [r["label"] for r in expected]
    assert [float(r[2]) for r in rows[1:]] == pytest.approx(
        [r["probabilities"]["pos"] for r in expected]
    )
    assert "wrote 16 predictions" in capsys.readouterr().err
