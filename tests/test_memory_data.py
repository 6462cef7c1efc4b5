"""Rows in memory (lists of dicts, DataFrames, Datasets, pyarrow Tables) checked as files are."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bertfit.data.examples import Columns
from bertfit.data.memory import read_rows, read_source
from bertfit.data.readers import read_examples
from bertfit.errors import BertfitError, ConfigError, DataError
from tests.conftest import marker_rows

TEXT = Columns("text", None, "label")


def test_a_list_of_dicts_reads_like_jsonl(tmp_path):
    rows = marker_rows(6, seed=1)
    examples = read_rows(rows, TEXT)
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    jsonl = read_examples(tmp_path / "a.jsonl", TEXT)
    assert (examples.texts, examples.labels, examples.lines) == (
        jsonl.texts,
        jsonl.labels,
        jsonl.lines,
    )
    assert examples.path == "<train rows>" and examples.lines == [1, 2, 3, 4, 5, 6]


def test_integer_labels_and_pairs():
    rows = [{"a": "x", "b": "y", "label": 1}, {"a": "z", "b": "w", "label": np.int64(0)}]
    examples = read_rows(rows, Columns("a", "b", "label"), name="dev")
    assert examples.labels == ["1", "0"] and examples.label_is_int
    assert examples.pairs == ["y", "w"] and examples.path == "<dev rows>"


def test_a_missing_column_lists_the_columns_there_are():
    rows = [{"sentence": "x", "label": 1}, {"sentence": "y", "label": 0, "extra": 2}]
    with pytest.raises(
        DataError,
        match=r"^<train rows>: no column 'text' for --text-column; the rows have columns: "
        r"0='sentence', 1='label', 2='extra'$",
    ):
        read_rows(rows, TEXT)


def test_bad_rows_stop_the_read_or_are_skipped():
    rows = [
        {"text": "ok", "label": "pos"},
        {"text": " ", "label": "neg"},
        {"text": "no label"},
        {"text": float("nan"), "label": "neg"},
        {"text": "fine", "label": "neg"},
    ]
    with pytest.raises(
        DataError,
        match=r"^<input rows>: 3 rows with an empty text or a missing label \(rows 2, 3, 4\); "
        r"fix them or pass --skip-bad-rows$",
    ):
        read_rows(rows, TEXT, name="input")
    examples = read_rows(rows, TEXT, skip_bad_rows=True)
    assert examples.texts == ["ok", "fine"] and examples.lines == [1, 5]
    assert examples.dropped == {"empty text": 2, "missing label": 1}


@pytest.mark.parametrize(
    "rows,message",
    [
        ([{"text": "a", "label": 1}, ["b", 0]], r"^<train rows>:2: expected a dict .* found list$"),
        ([{"text": ["a"], "label": 1}], r"^<train rows>:1: --text-column holds an array"),
        ([{"text": "a", "label": 1}, {"text": "b", "label": "pos"}], r"^<train rows>:2: label"),
        ([{"text": "a", "label": {"k": 1}}], r"^<train rows>:1: the label is an object"),
        ([], r"^<train rows>: no data rows$"),
    ],
)
def test_row_problems_name_the_row(rows, message):
    with pytest.raises(DataError, match=message):
        read_rows(rows, TEXT)


def test_label_kinds_drop_labels_limit_and_where():
    rows = [
        {"text": "a", "tags": ["x", "y"], "score": 1.5, "label": "-", "set": "TRAIN"},
        {"text": "b", "tags": "y|z", "score": 2, "label": "pos", "set": "TEST"},
        {"text": "c", "tags": [], "score": 0.0, "label": "neg", "set": "TRAIN"},
    ]
    multi = read_rows(rows, Columns("text", None, "tags"), label_kind="multi")
    assert multi.labels == [["x", "y"], ["y", "z"], []]  # no tags: a row with no labels on
    assert read_rows(rows, Columns("text", None, "score"), label_kind="score").labels == [
        1.5,
        2.0,
        0.0,
    ]
    kept = read_rows(rows, TEXT, drop_labels=("-",))
    assert kept.texts == ["b", "c"] and kept.dropped == {"label '-'": 1}
    assert read_rows(rows, TEXT, limit=1).texts == ["a"]
    assert read_rows(rows, TEXT, where=("set", "TRAIN")).texts == ["a", "c"]
    assert read_rows(rows, Columns("text"), with_labels=False).labels is None


def test_a_dataframe_with_int64_labels_and_nan_texts():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(
        {"text": ["one", np.nan, "three"], "label": np.array([1, 0, 1], dtype=np.int64)},
        index=[10, 20, 30],
    )
    examples = read_rows(frame, TEXT, skip_bad_rows=True)
    assert examples.texts == ["one", "three"] and examples.labels == ["1", "1"]
    assert examples.label_is_int and examples.lines == [1, 3]  # positions, not the index
    assert examples.path == "<train DataFrame>" and examples.dropped == {"empty text": 1}
    nullable = pd.DataFrame({"text": pd.array(["a", None], dtype="string"), "label": [0, 1]})
    with pytest.raises(DataError, match=r"^<train DataFrame>: 1 row .*\(row 2\)"):
        read_rows(nullable, TEXT)
    with pytest.raises(DataError, match=r"the DataFrame has columns: 0='text', 1='label'$"):
        read_rows(frame, Columns("sentence", None, "label"))
    numbered = pd.DataFrame([["a", 1], ["b", 0]])  # integer column names
    assert read_rows(numbered, Columns("0", None, "1")).labels == ["1", "0"]


def test_a_dataset_with_a_class_label_feature():
    datasets = pytest.importorskip("datasets")
    features = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])}
    )
    data = datasets.Dataset.from_dict({"text": ["bad", "good"], "label": [0, 1]}, features)
    for view in (data, data.with_format("numpy")):
        examples = read_rows(view, TEXT)
        assert examples.labels == ["0", "1"] and examples.label_is_int
        assert examples.texts == ["bad", "good"] and examples.path == "<train Dataset>"
    splits = datasets.DatasetDict({"train": data, "test": data})
    with pytest.raises(ConfigError, match=r"a DatasetDict with the splits train, test; pass one"):
        read_rows(splits, TEXT)


def test_a_pyarrow_table():
    pa = pytest.importorskip("pyarrow")
    table = pa.table({"text": ["x", "y"], "label": pa.array([0, 1], pa.int64())})
    examples = read_rows(table, TEXT)
    assert examples.labels == ["0", "1"] and examples.path == "<train Table>"


def test_read_source_takes_paths_or_rows_and_names_anything_else(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("text,label\nx,1\ny,0\n")
    assert read_source(path, TEXT).path == str(path)
    assert read_source(str(path), TEXT, limit=1).texts == ["x"]
    assert read_source([{"text": "x", "label": 1}], TEXT, name="dev").path == "<dev rows>"
    with pytest.raises(ConfigError, match=r"^dev data: expected a file path, .*; got int$"):
        read_source(3, TEXT, name="dev")
    with pytest.raises(ConfigError, match=r"; got generator$"):
        read_source((r for r in [{"text": "x"}]), TEXT)


values = st.one_of(
    st.none(),
    st.text(max_size=5),
    st.integers(-3, 3),
    st.floats(allow_nan=True),
    st.booleans(),
    st.lists(st.text(max_size=3), max_size=2),
)
records = st.lists(
    st.dictionaries(st.sampled_from(["text", "pair", "label"]), values, max_size=3), max_size=5
)


@settings(max_examples=150, deadline=None)
@given(
    rows=records,
    kind=st.sampled_from(["single", "multi", "score"]),
    pair=st.booleans(),
    skip=st.booleans(),
)
def test_any_rows_give_examples_or_a_one_line_error(rows, kind, pair, skip):
    columns = Columns("text", "pair" if pair else None, "label")
    try:
        examples = read_rows(rows, columns, label_kind=kind, skip_bad_rows=skip)
    except BertfitError as err:
        assert "\n" not in str(err) and str(err).startswith("<train rows>")
        return
    assert all(isinstance(t, str) and t.strip() for t in examples.texts)
    assert len(examples.labels) == len(examples.texts) == len(examples.lines)
    if kind == "score":
        assert all(isinstance(x, float) and np.isfinite(x) for x in examples.labels)
