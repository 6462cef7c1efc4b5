"""Parquet files through the same reader and checks as CSV/TSV/JSONL: tiny files written here."""

from __future__ import annotations

import json
import sys

import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from bertfit.cli.main import main  # noqa: E402
from bertfit.data.examples import Columns  # noqa: E402
from bertfit.data.parquet import class_label_names  # noqa: E402
from bertfit.data.readers import (  # noqa: E402
    data_file_format,
    file_format,
    iter_records,
    read_examples,
)
from bertfit.errors import DataError  # noqa: E402
from tests.conftest import marker_rows  # noqa: E402

TEXT = Columns("text", None, "label")


def write_parquet(path, columns: dict, schema=None, metadata=None):
    table = pa.table(columns, schema=schema)
    if metadata is not None:
        table = table.replace_schema_metadata(metadata)
    pq.write_table(table, path)
    return path


def test_int64_labels_read_like_jsonl_integers(tmp_path):
    path = write_parquet(
        tmp_path / "train.parquet",
        {"text": ["one", "two", "three"], "label": pa.array([1, 0, 1], pa.int64())},
    )
    examples = read_examples(path, TEXT)
    assert examples.texts == ["one", "two", "three"]
    assert examples.labels == ["1", "0", "1"] and examples.label_is_int
    assert examples.lines == [1, 2, 3] and examples.path == str(path)
    assert examples.pairs is None


def test_parquet_jsonl_and_csv_give_the_same_examples(tmp_path):
    rows = marker_rows(8, seed=1)
    write_parquet(tmp_path / "a.parquet", {k: [r[k] for r in rows] for k in ("text", "label")})
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    parquet = read_examples(tmp_path / "a.parquet", TEXT)
    jsonl = read_examples(tmp_path / "a.jsonl", TEXT)
    assert (parquet.texts, parquet.labels, parquet.lines) == (
        jsonl.texts,
        jsonl.labels,
        jsonl.lines,
    )
    assert not parquet.label_is_int


def test_pairs_column_numbers_limit_and_where(tmp_path):
    path = write_parquet(
        tmp_path / "p.parquet",
        {
            "premise": [f"p{i}" for i in range(6)],
            "hypothesis": [f"h{i}" for i in range(6)],
            "label": ["yes", "no"] * 3,
            "set": ["TRAIN", "TEST"] * 3,
        },
    )
    pairs = read_examples(path, Columns("premise", "hypothesis", "label"), limit=2)
    assert pairs.texts == ["p0", "p1"] and pairs.pairs == ["h0", "h1"]
    by_number = read_examples(path, Columns("0", "1", "2"))
    assert by_number.texts == [f"p{i}" for i in range(6)] and by_number.labels[:2] == ["yes", "no"]
    train = read_examples(path, Columns("premise", None, "label"), where=("set", "TRAIN"))
    assert train.texts == ["p0", "p2", "p4"] and train.lines == [1, 3, 5]


def test_a_missing_column_lists_the_schema(tmp_path):
    path = write_parquet(tmp_path / "a.parquet", {"sentence": ["x"], "label": [1]})
    with pytest.raises(
        DataError,
        match=r"a.parquet: no column 'text' for --text-column; the file has columns: "
        r"0='sentence', 1='label'$",
    ):
        read_examples(path, TEXT)
    with pytest.raises(DataError, match=r"no column '5' for --label-column"):
        read_examples(path, Columns("0", None, "5"))


def test_null_texts_and_labels_are_bad_rows_named_by_row(tmp_path):
    path = write_parquet(
        tmp_path / "a.parquet",
        {"text": ["ok", None, "  ", "fine", "good"], "label": [1, 0, 1, None, 0]},
    )
    with pytest.raises(
        DataError,
        match=r"a.parquet: 3 rows with an empty text or a missing label \(rows 2, 3, 4\); "
        r"fix them or pass --skip-bad-rows$",
    ):
        read_examples(path, TEXT)
    examples = read_examples(path, TEXT, skip_bad_rows=True)
    assert examples.texts == ["ok", "good"] and examples.lines == [1, 5]
    assert examples.dropped == {"empty text": 2, "missing label": 1}
    assert examples.label_is_int


@pytest.mark.parametrize(
    "columns,message",
    [
        ({"text": [["a", "b"]], "label": [1]}, r"a.parquet:1: --text-column holds an array"),
        ({"text": [{"k": "v"}], "label": [1]}, r"a.parquet:1: --text-column holds an object"),
        ({"text": [b"raw"], "label": [1]}, r"a.parquet:1: --text-column holds bytes"),
        ({"text": ["a"], "label": [["x", "y"]]}, r"a.parquet:1: the label is an array"),
    ],
)
def test_typed_columns_get_the_jsonl_checks(tmp_path, columns, message):
    path = write_parquet(tmp_path / "a.parquet", columns)
    with pytest.raises(DataError, match=message):
        read_examples(path, TEXT)


def test_multi_label_lists_and_regression_scores(tmp_path):
    path = write_parquet(
        tmp_path / "a.parquet",
        {"text": ["a", "b"], "tags": [["x", "y"], ["y"]], "score": [0.5, 4.0]},
    )
    multi = read_examples(path, Columns("text", None, "tags"), label_kind="multi")
    assert multi.labels == [["x", "y"], ["y"]]
    score = read_examples(path, Columns("text", None, "score"), label_kind="score")
    assert score.labels == [0.5, 4.0]


def test_empty_and_damaged_files(tmp_path):
    schema = pa.schema([("text", pa.string()), ("label", pa.int64())])
    empty = write_parquet(tmp_path / "empty.parquet", {"text": [], "label": []}, schema=schema)
    with pytest.raises(DataError, match=r"empty.parquet: no data rows$"):
        read_examples(empty, TEXT)
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"text,label\nx,1\n")
    with pytest.raises(DataError, match=r"bad.parquet: not a readable Parquet file \("):
        read_examples(bad, TEXT)
    with pytest.raises(DataError, match=r"Parquet compresses inside the file"):
        file_format(tmp_path / "x.parquet.gz")


def test_without_pyarrow_one_line_says_what_to_install(tmp_path, monkeypatch):
    path = write_parquet(tmp_path / "train.parquet", {"text": ["x"], "label": [1]})
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(DataError) as err:
        read_examples(path, TEXT)
    assert str(err.value) == (
        f"{path}: reading Parquet needs pyarrow: pip install 'bertfit[parquet]'"
    )


def test_formats_and_records_know_parquet(tmp_path):
    path = write_parquet(tmp_path / "a.parquet", {"text": ["x", "y"], "label": [0, 1]})
    assert file_format("data/Train.PARQUET") == "parquet"
    assert data_file_format(path) == "parquet"
    header, records = iter_records(path, has_header=True)
    assert header == ["text", "label"]
    assert list(records) == [(1, {"text": "x", "label": 0}), (2, {"text": "y", "label": 1})]
    with pytest.raises(DataError, match=r"unknown file type '.xlsx'; .*or .parquet"):
        file_format("a.xlsx")


def test_class_label_names_from_the_hugging_face_metadata(tmp_path):
    features = {"label": {"names": ["neg", "pos"], "_type": "ClassLabel"}}
    meta = {b"huggingface": json.dumps({"info": {"features": features}}).encode()}
    path = write_parquet(tmp_path / "a.parquet", {"text": ["x"], "label": [1]}, metadata=meta)
    assert class_label_names(path, "label") == ["neg", "pos"]
    assert class_label_names(path, "text") is None
    plain = write_parquet(tmp_path / "b.parquet", {"text": ["x"], "label": [1]})
    assert class_label_names(plain, "label") is None


@pytest.mark.slow
def test_train_predict_and_evaluate_on_parquet_files(tiny_bert, tmp_path, cache_env, capsys):
    def table(rows):
        return {"text": [r["text"] for r in rows], "label": [r["label"] for r in rows]}

    train = write_parquet(tmp_path / "train.parquet", table(marker_rows(24, seed=1)))
    dev = write_parquet(tmp_path / "dev.parquet", table(marker_rows(6, seed=2)))
    out = tmp_path / "run"
    argv = ["train", "--train", str(train), "--dev", str(dev), "--model", str(tiny_bert)]
    fast = ["--epochs", "1", "--batch-size", "8", "--max-length", "32", "--no-progress"]
    assert main([*argv, "--output", str(out), *fast]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["train_examples"] == 24 and results["dev"]["n"] == 6
    assert main(["evaluate", str(out), "--data", str(dev), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 6
    preds = tmp_path / "preds.jsonl"
    assert main(["predict", str(out), "--input", str(dev), "--output", str(preds)]) == 0
    assert len(preds.read_text().splitlines()) == 6
