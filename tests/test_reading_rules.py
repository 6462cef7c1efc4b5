"""One rule per kind of file, for every command (issue 13, items 5 and 7).

.txt is one text per line; CSV/TSV have a header unless only column numbers are given and the
first row does not look like names (or ``--no-header``); a column number picks by position; a
semicolon-separated CSV says so and ``--delimiter ';'`` reads it; a TSV written with CSV quotes
(as pandas writes it) warns once and ``--quoting csv`` reads it. Tiny files written here.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from bertfit.cli.main import main
from bertfit.config import EmbedConfig, PredictConfig, TrainConfig
from bertfit.data.examples import Columns
from bertfit.data.readers import read_examples
from bertfit.errors import ConfigError, DataError
from bertfit.inference.embed import read_sentences
from tests.conftest import marker_rows, train_argv

TEXTS = Columns("sentence", None, "label")  # a run's trained columns: names the .txt lacks
FAST = ["--epochs", "1", "--batch-size", "8", "--max-length", "32", "--no-progress", "--seed", "1"]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def bertfit_warnings(caplog) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "bertfit" and r.levelname == "WARNING"
    ]


# ---- .txt: one text per line, everywhere ---------------------------------------------------------


def test_txt_is_one_text_per_line_for_predict_and_embed(tmp_path):
    path = write(tmp_path / "two.txt", "great movie, loved it\n\n  awful\t plot \n")
    for columns in (Columns("0", None, "label"), TEXTS):
        examples = read_examples(path, columns, with_labels=False)
        assert examples.texts == ["great movie, loved it", "awful\t plot"]
        assert examples.lines == [1, 3] and examples.pairs is None
    assert read_sentences(path) == ["great movie, loved it", "awful\t plot"]
    assert read_sentences(path, "0") == read_sentences(path)


def test_txt_is_refused_where_labels_or_pairs_are_needed(tmp_path):
    path = write(tmp_path / "train.txt", "great movie\tpos\nawful\tneg\n")
    with pytest.raises(DataError) as err:
        read_examples(path, Columns("text", None, "label"))
    assert str(err.value) == (
        f"{path}: a .txt file holds one text per line and no labels; give this data as .tsv, "
        ".csv or .jsonl (or pass --delimiter to read the file's columns)"
    )
    with pytest.raises(DataError, match=r"train.txt: a .txt file .* no second text for --pair"):
        read_examples(path, Columns("text", "pair", "label"), with_labels=False)
    tabbed = read_examples(path, Columns("0", None, "1"), delimiter="\\t")  # read as columns
    assert tabbed.texts == ["great movie", "awful"] and tabbed.labels == ["pos", "neg"]


# ---- header or not, and column numbers -----------------------------------------------------------


@pytest.mark.parametrize("name,sep", [("plain.csv", ","), ("plain.tsv", "\t")])
def test_headerless_csv_and_tsv_take_column_numbers(tmp_path, name, sep):
    path = write(tmp_path / name, f"great movie{sep}1\nawful plot{sep}0\n")
    examples = read_examples(path, Columns("0", None, "1"))
    assert examples.texts == ["great movie", "awful plot"] and examples.labels == ["1", "0"]
    assert examples.lines == [1, 2]
    # predict's columns: the trained label column is named, but not read
    predicted = read_examples(path, Columns("0", None, "label"), with_labels=False)
    assert predicted.texts == examples.texts


def test_a_column_number_picks_by_position_in_a_file_with_a_header(tmp_path, caplog):
    path = write(tmp_path / "h.csv", "sentence,label\ngreat movie,pos\nawful,neg\n")
    caplog.set_level(logging.INFO, logger="bertfit")
    by_number = read_examples(path, Columns("0", None, "1"))
    assert by_number.texts == ["great movie", "awful"] and by_number.lines == [2, 3]
    assert any("looks like column names and is read as the header" in m for m in caplog.messages)
    mixed = read_examples(path, Columns("sentence", None, "1"))
    assert mixed.labels == ["pos", "neg"]
    # predict --text-column 0 on a one-column file: the label column is not read
    one = write(tmp_path / "one.csv", 'text\n"great movie, loved it"\nawful\n')
    predicted = read_examples(one, Columns("0", None, "label"), with_labels=False)
    assert predicted.texts == ["great movie, loved it", "awful"]
    with pytest.raises(DataError) as err:
        read_examples(path, Columns("0", None, "2"))
    assert str(err.value) == (
        f"{path}: no column '2' for --label-column; the file has columns: 0='sentence', 1='label'"
    )


def test_no_header_reads_a_first_row_that_looks_like_names_as_data(tmp_path):
    path = write(tmp_path / "tips.tsv", "summary\tpos\ngood fun for all\tpos\nslow, long\tneg\n")
    guessed = read_examples(path, Columns("0", None, "1"))
    assert guessed.texts == ["good fun for all", "slow, long"]  # taken for a header
    data = read_examples(path, Columns("0", None, "1"), header=False)
    assert data.texts == ["summary", "good fun for all", "slow, long"] and data.lines == [1, 2, 3]
    with pytest.raises(DataError) as err:
        read_examples(path, Columns("text", None, "1"), header=False)
    assert str(err.value) == (
        f"{path}: --no-header reads every row as data, so columns are given by number "
        "(0-based); got --text-column 'text'"
    )


# ---- delimiters ----------------------------------------------------------------------------------


def test_semicolon_csv_is_named_and_read_with_delimiter(tmp_path):
    path = write(tmp_path / "semi.csv", 'text;label\ngreat, really;pos\n"a;b";neg\n')
    with pytest.raises(DataError) as err:
        read_examples(path, Columns("text", None, "label"))
    assert str(err.value) == (
        f"{path}:1: no column 'text' for --text-column; the header 'text;label' looks "
        "semicolon-separated, not comma-separated; pass --delimiter ';'"
    )
    with pytest.raises(DataError, match=r"no column '1' for --label-column; the first row "):
        read_examples(path, Columns("0", None, "1"), header=False)
    examples = read_examples(path, Columns("text", None, "label"), delimiter=";")
    assert examples.texts == ["great, really", "a;b"] and examples.labels == ["pos", "neg"]


def test_a_tab_separated_csv_and_bad_delimiters(tmp_path):
    path = write(tmp_path / "tabs.csv", "text\tlabel\ngreat\tpos\n")
    with pytest.raises(DataError, match=r"looks tab-separated, not comma-separated; pass "):
        read_examples(path, Columns("text", None, "label"))
    assert read_examples(path, Columns("text", None, "label"), delimiter="tab").labels == ["pos"]
    with pytest.raises(ConfigError, match=r"--delimiter must be one character .* got ';;'"):
        read_examples(path, Columns("text", None, "label"), delimiter=";;")
    with pytest.raises(ConfigError, match=r"--delimiter must be one character.*; --quoting must"):
        EmbedConfig(model="m", input="a.txt", output="a.npy", delimiter="", quoting="x").validate()
    assert PredictConfig(run_dir="r", input="a.csv", delimiter="\\t").validate()


# ---- quoting -------------------------------------------------------------------------------------

PANDAS_TSV = (  # what DataFrame.to_csv(sep="\t") writes: quotes only around texts that need them
    'label\tsentence\n1\t"a ""quoted"" word"\n0\tplain text\n1\t"another ""one"""\n'
)


def test_pandas_quoted_tsv_warns_once_and_quoting_csv_reads_it(tmp_path, caplog):
    path = write(tmp_path / "pandas.tsv", PANDAS_TSV)
    columns = Columns("sentence", None, "label")
    caplog.set_level(logging.INFO, logger="bertfit")
    kept = read_examples(path, columns)
    assert kept.texts[0] == '"a ""quoted"" word"'  # quoting off, as GLUE reads TSV
    assert bertfit_warnings(caplog) == [
        f'warning: {path}:2: a field in CSV quotes ("a ""quoted"" word"); this file is read with quoting '
        "off, so the quotes would stay in the texts; pass --quoting csv to read such fields as "
        "quoted (--quoting none keeps them and silences this)"
    ]
    caplog.clear()
    quoted = read_examples(path, columns, quoting="csv")
    assert quoted.texts == ['a "quoted" word', "plain text", 'another "one"']
    assert read_examples(path, columns, quoting="none").texts == kept.texts
    assert bertfit_warnings(caplog) == []


def test_a_tsv_with_every_field_quoted_warns_and_a_plain_one_does_not(tmp_path, caplog):
    quoted = write(tmp_path / "all.tsv", '"text"\t"label"\n"fine film"\t"pos"\n"bad"\t"neg"\n')
    plain = write(
        tmp_path / "glue.tsv", 'sentence\tlabel\nhe said "no" .\t0\n"yes" , she said\t1\n'
    )
    read_examples(plain, Columns("sentence", None, "label"))
    assert bertfit_warnings(caplog) == []
    read_examples(quoted, Columns("0", None, "1"), header=False)
    assert len(bertfit_warnings(caplog)) == 1 and "all.tsv:1:" in bertfit_warnings(caplog)[0]
    assert read_examples(quoted, Columns("text", None, "label"), quoting="csv").texts == [
        "fine film",
        "bad",
    ]


# ---- the CLI: train with --delimiter, predict a .txt ---------------------------------------------


@pytest.fixture(scope="module")
def semicolon_run(tiny_bert, tmp_path_factory) -> Path:
    """A run trained on a semicolon-separated CSV with --delimiter ';'."""
    root = tmp_path_factory.mktemp("semicolon")
    rows = marker_rows(16, seed=7)
    train = write(
        root / "train.csv", "text;label\n" + "".join(f"{r['text']};{r['label']}\n" for r in rows)
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BERTFIT_CACHE", str(root / "cache"))
        argv = train_argv(train, tiny_bert, root / "run")
        assert main([*argv, "--delimiter", ";", *FAST]) == 0
    return root / "run"


def test_train_reads_a_semicolon_csv_with_delimiter(semicolon_run, tmp_path, tiny_bert, capsys):
    meta = json.loads((semicolon_run / "bertfit.json").read_text())
    assert sorted(meta["labels"]) == ["neg", "pos"]
    train = write(tmp_path / "t.csv", "text;label\ngreat;pos\nawful;neg\n")
    argv = [
        "train",
        "--train",
        str(train),
        "--model",
        str(tiny_bert),
        "--output",
        str(tmp_path / "r"),
    ]
    capsys.readouterr()
    assert main([*argv, *FAST]) == 2
    assert (
        "looks semicolon-separated, not comma-separated; pass --delimiter ';'"
        in capsys.readouterr().err
    )
    assert main([*argv, "--delimiter", ";;", *FAST]) == 2
    assert "--delimiter must be one character" in capsys.readouterr().err
    assert TrainConfig(train="a.txt", output="o", quoting="csv").validate()


def test_predict_a_txt_file_with_a_column_number(semicolon_run, tmp_path, tiny_bert, capsys):
    inputs = write(tmp_path / "two.txt", "great movie, loved it\n\nawful\n")
    capsys.readouterr()
    argv = ["predict", str(semicolon_run), "--input", str(inputs), "--text-column", "0"]
    assert main(argv) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(records) == 2 and all(r["label"] in ("pos", "neg") for r in records)
    train_txt = write(tmp_path / "train.txt", "great\nawful\n")
    argv = ["train", "--train", str(train_txt), "--output", str(tmp_path / "r"), *FAST]
    assert main([*argv, "--model", str(tiny_bert)]) == 2
    assert "a .txt file holds one text per line and no labels" in capsys.readouterr().err
