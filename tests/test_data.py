import gzip

import pytest

from bertfit.data.examples import Columns
from bertfit.data.labels import check_known_labels, label_set
from bertfit.data.readers import read_examples
from bertfit.data.splits import stratified_split
from bertfit.errors import DataError


def test_reads_tsv_csv_jsonl_and_gzip(tmp_path):
    (tmp_path / "a.tsv").write_text('sentence\tlabel\nit \'s "quoted" fine\t1\nbad\t0\n')
    (tmp_path / "a.csv").write_text('sentence,label\n"with, comma",pos\nplain,neg\n')
    (tmp_path / "a.jsonl").write_text(
        '{"sentence": "one", "label": 1}\n\n{"sentence": "two", "label": 0}\n'
    )
    (tmp_path / "a.tsv.gz").write_bytes(gzip.compress((tmp_path / "a.tsv").read_bytes()))
    cols = Columns("sentence", None, "label")
    tsv = read_examples(tmp_path / "a.tsv", cols)
    assert (
        tsv.texts == ['it \'s "quoted" fine', "bad"]
        and tsv.labels == ["1", "0"]
        and tsv.label_is_int
    )
    assert tsv.lines == [2, 3]
    assert read_examples(tmp_path / "a.csv", cols).texts == ["with, comma", "plain"]
    jsonl = read_examples(tmp_path / "a.jsonl", cols)
    assert jsonl.labels == ["1", "0"] and jsonl.lines == [1, 3]
    assert read_examples(tmp_path / "a.tsv.gz", cols).texts == tsv.texts


def test_headerless_file_takes_column_numbers(tmp_path):
    path = tmp_path / "cola.tsv"
    path.write_text("src\t1\t\tgood sentence .\nsrc\t0\t*\tsentence bad .\n")
    ex = read_examples(path, Columns("3", None, "1"))
    assert ex.texts == ["good sentence .", "sentence bad ."] and ex.labels == ["1", "0"]


def test_pairs_and_limit(tmp_path):
    path = tmp_path / "p.tsv"
    path.write_text(
        "premise\thypothesis\tlabel\n" + "".join(f"p{i}\th{i}\t{i % 3}\n" for i in range(10))
    )
    ex = read_examples(path, Columns("premise", "hypothesis", "label"), limit=4)
    assert ex.texts == ["p0", "p1", "p2", "p3"] and ex.pairs == ["h0", "h1", "h2", "h3"]


def test_missing_column_lists_the_columns(tmp_path):
    path = tmp_path / "a.tsv"
    path.write_text("sentence\tlabel\nx\t1\n")
    with pytest.raises(
        DataError,
        match=r"no column 'text' for --text-column; the file has columns: 0='sentence', 1='label'",
    ):
        read_examples(path, Columns("text", None, "label"))


def test_bad_rows_reported_or_skipped(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("text,label\nok,1\n ,0\nfine,\nalso ok,0\n")
    with pytest.raises(
        DataError, match=r"a.csv: 2 rows with an empty text or a missing label \(lines 3, 4\)"
    ):
        read_examples(path, Columns("text", None, "label"))
    ex = read_examples(path, Columns("text", None, "label"), skip_bad_rows=True)
    assert ex.texts == ["ok", "also ok"]


@pytest.mark.parametrize(
    "content,message",
    [
        (b"", "empty file"),
        (b"text,label\n\xff\xfe,1\n", r"a.csv:2: bytes that are not UTF-8"),
        (b"text,label\nx,1,extra\n", r"a.csv:2: expected 2 fields as in the header, found 3"),
    ],
)
def test_malformed_csv(tmp_path, content, message):
    path = tmp_path / "a.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        read_examples(path, Columns("text", None, "label"))


def test_bad_json_line_and_paths(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"text": "x", "label": 1}\n{"text": oops}\n')
    with pytest.raises(DataError, match=r"a.jsonl:2: invalid JSON"):
        read_examples(path, Columns("text", None, "label"))
    with pytest.raises(DataError, match="no such file"):
        read_examples(tmp_path / "missing.csv", Columns("text", None, "label"))
    with pytest.raises(DataError, match="unknown file type '.xlsx'"):
        read_examples(tmp_path / "data.xlsx", Columns("text", None, "label"))


def test_labels_sorted_numerically_and_unseen_dev_label(tmp_path):
    assert label_set(["10", "2", "1"], as_int=True) == ["1", "2", "10"]
    assert label_set(["pos", "neg"], as_int=False) == ["neg", "pos"]
    path = tmp_path / "dev.csv"
    path.write_text("text,label\nx,pos\ny,maybe\n")
    dev = read_examples(path, Columns("text", None, "label"))
    with pytest.raises(
        DataError, match=r"dev.csv:3: label 'maybe' does not occur in the training data"
    ):
        check_known_labels(dev, ["neg", "pos"])


def test_stratified_split_is_seeded_and_stratified():
    labels = ["a"] * 80 + ["b"] * 20
    train, dev = stratified_split(labels, 0.1, seed=3)
    assert len(dev) == 10 and sorted(train + dev) == list(range(100))
    assert sum(labels[i] == "b" for i in dev) == 2
    assert stratified_split(labels, 0.1, seed=3) == (train, dev)
    assert stratified_split(labels, 0.1, seed=4) != (train, dev)


def test_json_nan_and_null_are_missing_values(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text(
        '{"text": "ok", "label": 1}\n{"text": NaN, "label": 0}\n{"text": "x", "label": NaN}\n'
        '{"text": null, "label": 1}\n'
    )
    with pytest.raises(DataError, match=r"a.jsonl: 3 rows with .* \(lines 2, 3, 4\)"):
        read_examples(path, Columns("text", None, "label"))
    examples = read_examples(path, Columns("text", None, "label"), skip_bad_rows=True)
    assert examples.texts == ["ok"] and examples.dropped == {"empty text": 2, "missing label": 1}
