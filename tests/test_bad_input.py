"""Bad input, systematically: each bad file, model folder, run directory or flag combination,
run through the real CLI in-process, gives exit code 2, exactly one line on stderr naming the
file (and line) and what is wrong, no traceback, and nothing written. A few inputs that look bad
but are fine (control characters, a 1 MB review) must work.

Stderr is checked as a user sees it: the ``bertfit`` log lines and the warnings Python would
print are counted too. Tiny random models and generated data only; no network, no ../shared.
"""

from __future__ import annotations

import gzip
import json
import logging
import shutil
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from bertfit.cli.main import main
from bertfit.data.examples import Columns
from bertfit.data.readers import read_examples
from tests.conftest import FILLER, MARKER, WORDS, marker_rows, write_rows

FAST = ["--epochs", "1", "--batch-size", "8", "--max-length", "32", "--no-progress", "--seed", "1"]
QUIET = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)


pytestmark = pytest.mark.usefixtures("offline_env")


class _Stderr(logging.Handler):
    """What ``logging.basicConfig(stream=sys.stderr)`` in the CLI does, into the current stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        sys.stderr.write(self.format(record) + "\n")


def cli(capsys, argv: list[str]) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``bertfit ARGV``, stderr with log lines and warnings."""
    capsys.readouterr()
    logger, handler = logging.getLogger("bertfit"), _Stderr(logging.INFO)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            rc = main(argv)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    out = capsys.readouterr()
    shown = [w for w in caught if not issubclass(w.category, QUIET)]
    err = out.err + "".join(f"{w.category.__name__}: {w.message}\n" for w in shown)
    print("$ bertfit " + " ".join(argv))  # shown by pytest -rP: the report of every case
    print(f"exit {rc}: {err}", end="")
    return rc, out.out, err


def fails(capsys, argv: list[str], *expected: str, nothing_at: Path) -> str:
    """Exit code 2, one ``bertfit: error:`` line holding every ``expected`` part, nothing written."""
    rc, _, err = cli(capsys, argv)
    assert rc == 2, err
    assert err.startswith("bertfit: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for part in expected:
        assert part in err, (part, err)
    assert not nothing_at.exists(), f"{nothing_at} was written"
    return err


def fails_to_train(capsys, tmp_path: Path, model: Path, *expected: str) -> str:
    """``fails`` for training good data on a bad ``model``: nothing may appear at the output."""
    train = write_rows(tmp_path / "train.csv", good_rows())
    out = tmp_path / "run"
    return fails(capsys, train_argv(train, out, model), *expected, nothing_at=out)


def train_argv(train: Path, out: Path, model: Path, *extra: str) -> list[str]:
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


def good_rows(n: int = 16) -> list[dict]:
    return marker_rows(n, seed=3)


# ---- data files given to train ------------------------------------------------------------------


def csv_lines(*rows: str) -> bytes:
    return "".join(row + "\n" for row in rows).encode()


def jsonl(*records) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


GOOD = [{"text": "great movie", "label": "pos"}, {"text": "awful film", "label": "neg"}]

# (id, file name, content, extra flags, expected parts; "{p}" is the file's path)
BAD_FILES = [
    (
        "csv-unclosed-quote",
        "a.csv",
        csv_lines("text,label", '"great movie,pos', "awful film,neg", "the plot,pos"),
        [],
        ["{p}:2: expected 2 fields", "from line 2 to 4", "quote on line 2 left open"],
    ),
    (
        "tsv-wrong-number-of-fields",
        "a.tsv",
        csv_lines("text\tlabel", "great movie\tpos", "awful\tfilm\tneg"),
        [],
        ["{p}:3: expected 2 fields as in the header, found 3"],
    ),
    (
        "jsonl-invalid-json",
        "a.jsonl",
        jsonl(*GOOD) + b'{"text": "the plot", "label": }\n',
        [],
        ["{p}:3: invalid JSON (Expecting value, column 31)"],
    ),
    (
        "jsonl-line-not-an-object",
        "a.jsonl",
        jsonl(GOOD[0], ["awful film", "neg"]),
        [],
        ["{p}:2: expected a JSON object per line, found an array"],
    ),
    (
        "json-array-not-json-lines",
        "a.json",
        json.dumps(GOOD, indent=2).encode(),
        [],
        ["{p}:1: a JSON array, not JSON Lines; write one JSON object per line"],
    ),
    (
        "latin-1",
        "a.csv",
        b"text,label\ngreat movie,pos\ncaf\xe9 film,neg\n",
        [],
        ["{p}:3: bytes that are not UTF-8 (b'\\xe9 fi'); save the file as UTF-8"],
    ),
    (
        "utf-16-with-bom",
        "a.csv",
        "text,label\ngreat movie,pos\nawful film,neg\n".encode("utf-16"),
        [],
        ["{p}: the file is UTF-16 (it starts with a UTF-16 byte-order mark); save it as UTF-8"],
    ),
    (
        "utf-16-without-bom",
        "a.csv",
        "text,label\ngreat movie,pos\nawful film,neg\n".encode("utf-16-le"),
        [],
        ["{p}:1: NUL byte in the file; it looks like UTF-16; save it as UTF-8"],
    ),
    (
        "nul-byte",
        "a.csv",
        b"text,label\ngreat movie,pos\nawful\x00film,neg\n",
        [],
        ["{p}:3: NUL byte in the file; is it really a text file?"],
    ),
    (
        "empty-text-field",
        "a.csv",
        csv_lines("text,label", "great movie,pos", ",neg", "awful film,neg"),
        [],
        ["{p}: 1 row with an empty text or a missing label (line 3)", "--skip-bad-rows"],
    ),
    (
        "whitespace-texts-jsonl",
        "a.jsonl",
        jsonl(GOOD[0], {"text": "  ", "label": "neg"}, {"text": None, "label": "pos"}),
        [],
        ["{p}: 2 rows with an empty text or a missing label (lines 2, 3)"],
    ),
    (
        "missing-label",
        "a.csv",
        csv_lines("text,label", "great movie,pos", "awful film,"),
        [],
        ["{p}: 1 row with an empty text or a missing label (line 3)"],
    ),
    ("empty-file", "a.csv", b"", [], ["{p}: empty file"]),
    ("blank-lines-only", "a.jsonl", b"\n  \n\r\n", [], ["{p}: empty file"]),
    (
        "header-only",
        "a.csv",
        b"text,label\n",
        [],
        ["{p}: only a header line, no data rows"],
    ),
    (
        "labels-of-mixed-types",
        "a.jsonl",
        jsonl({"text": "great movie", "label": 1}, {"text": "awful film", "label": "pos"}),
        [],
        ['{p}:2: label "pos" is a name but line 1 has the number 1', "all names or all numbers"],
    ),
    (
        "label-is-an-object",
        "a.jsonl",
        jsonl(GOOD[0], {"text": "awful film", "label": {"name": "neg"}}),
        [],
        ["{p}:2: the label is an object", "--multi-label"],
    ),
    (
        "text-is-a-list",
        "a.jsonl",
        jsonl({"text": ["great", "movie"], "label": "pos"}, GOOD[1]),
        [],
        ["{p}:1: --text-column holds an array, expected a string"],
    ),
    (
        "regression-non-numeric-score",
        "a.csv",
        csv_lines("text,label", "great movie,4.5", "awful film,high"),
        ["--regression"],
        ["{p}:3: label 'high' is not a number; --regression needs numeric scores"],
    ),
    (
        "regression-infinite-score",
        "a.jsonl",
        jsonl({"text": "great movie", "label": 4.5}, {"text": "awful film", "label": "-inf"}),
        ["--regression"],
        ["{p}:2: label '-inf' is not a finite number"],
    ),
    (
        "missing-column",
        "a.csv",
        csv_lines("sentence,label", "great movie,pos", "awful film,neg"),
        [],
        ["{p}: no column 'text' for --text-column; the file has columns: 0='sentence', 1='label'"],
    ),
    (
        "one-label-only",
        "a.csv",
        csv_lines("text,label", "great movie,pos", "awful film,pos"),
        [],
        ["{p}: only one label ('pos') in the training data; need at least two"],
    ),
    (
        "truncated-gzip",
        "a.csv.gz",
        gzip.compress(csv_lines("text,label", *["great movie,pos"] * 50))[:30],
        [],
        ["{p}: cannot read: Compressed file ended before the end-of-stream marker was reached"],
    ),
    (
        "unknown-extension",
        "a.xlsx",
        b"PK\x03\x04",
        [],
        ["{p}: unknown file type '.xlsx'; use .csv, .tsv or .jsonl (optionally .gz)"],
    ),
]


@pytest.mark.parametrize(
    "name,content,extra,expected",
    [case[1:] for case in BAD_FILES],
    ids=[case[0] for case in BAD_FILES],
)
@pytest.mark.slow
def test_bad_training_file(tiny_bert, tmp_path, capsys, name, content, extra, expected):
    path = tmp_path / name
    path.write_bytes(content)
    out = tmp_path / "run"
    parts = [e.format(p=path) for e in expected]
    fails(capsys, train_argv(path, out, tiny_bert, *extra), *parts, nothing_at=out)


def test_directory_given_as_train(tiny_bert, tmp_path, capsys):
    for folder in (tmp_path / "data.csv", tmp_path / "corpus"):  # with and without an extension
        folder.mkdir()
        out = tmp_path / "run"
        argv = train_argv(folder, out, tiny_bert)
        fails(capsys, argv, f"{folder}: is a directory, expected a data file", nothing_at=out)


def test_missing_train_and_dev_files(tiny_bert, tmp_path, capsys):
    out = tmp_path / "run"
    for missing in (tmp_path / "nope.csv", tmp_path / "nope"):
        argv = train_argv(missing, out, tiny_bert)
        fails(capsys, argv, f"{missing}: no such file", nothing_at=out)
    train = write_rows(tmp_path / "train.csv", good_rows())
    argv = train_argv(train, out, tiny_bert, "--dev", str(tmp_path / "dev.jsonl"))
    fails(capsys, argv, f"{tmp_path / 'dev.jsonl'}: no such file", nothing_at=out)


def test_bad_dev_file(tiny_bert, tmp_path, capsys):
    train = write_rows(tmp_path / "train.csv", good_rows())
    out = tmp_path / "run"
    dev = tmp_path / "dev.jsonl"
    dev.write_bytes(jsonl(*GOOD) + b"{oops\n")
    argv = train_argv(train, out, tiny_bert, "--dev", str(dev))
    fails(capsys, argv, f"{dev}:3: invalid JSON", nothing_at=out)
    dev.write_bytes(jsonl(*GOOD, {"text": "the plot", "label": "maybe"}))
    fails(
        capsys,
        argv,
        f"{dev}:3: label 'maybe' does not occur in the training data (known labels: neg, pos)",
        nothing_at=out,
    )


# ---- inputs that look bad but are fine ----------------------------------------------------------


def train_works(capsys, argv: list[str], out: Path) -> dict:
    rc, _, err = cli(capsys, argv)
    assert rc == 0, err
    assert "error" not in err
    return json.loads((out / "results.json").read_text())


def with_controls(rows: list[dict], controls: str) -> list[dict]:
    """Control characters sprinkled into every text (never a text of only whitespace)."""
    return [
        {**row, "text": controls[i % len(controls)] + row["text"] + controls[::-1][: 1 + i % 3]}
        for i, row in enumerate(rows)
    ]


ASCII_CONTROLS = "\x01\x02\x07\x08\x0b\x0c\x1b\x1c\x1d\x1e\x1f\x7f\u200b\ufeff"


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl"])
def test_control_characters_train_fine(tiny_bert, tmp_path, capsys, suffix):
    train = write_rows(tmp_path / f"train{suffix}", with_controls(good_rows(), ASCII_CONTROLS))
    out = tmp_path / "run"
    results = train_works(capsys, train_argv(train, out, tiny_bert), out)
    assert results["train_examples"] + results["dev_examples"] == 16


def unicode_line_breaks_file(path: Path) -> Path:
    """JSONL as ``json.dumps(ensure_ascii=False)`` writes it: NEL, LS and PS stay raw in strings."""
    rows = with_controls(good_rows(), "\x85\u2028\u2029")
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


def test_unicode_line_breaks_inside_jsonl_strings_are_read(tmp_path):
    path = unicode_line_breaks_file(tmp_path / "train.jsonl")
    examples = read_examples(path, Columns("text", None, "label"))
    assert len(examples) == 16 and examples.lines == list(range(1, 17))
    assert "\u2028" in "".join(examples.texts)


def test_unicode_line_breaks_train_fine(tiny_bert, tmp_path, capsys):
    train = unicode_line_breaks_file(tmp_path / "train.jsonl")
    out = tmp_path / "run"
    train_works(capsys, train_argv(train, out, tiny_bert), out)


def megabyte_review() -> str:
    words, size = [], 0
    while size < 1_000_000:
        words.append(FILLER[len(words) % len(FILLER)])
        size += len(words[-1]) + 1
    return MARKER + " " + " ".join(words)


@pytest.mark.slow
def test_a_one_megabyte_review_trains_and_predicts(tiny_bert, trained, tmp_path, capsys):
    big = megabyte_review()
    rows = good_rows() + [{"text": big, "label": "pos"}]
    out = tmp_path / "run"
    for suffix in (".csv", ".tsv"):  # past the csv module's default 128 kB field limit
        train = write_rows(tmp_path / f"train{suffix}", rows)
        shutil.rmtree(out, ignore_errors=True)
        results = train_works(capsys, train_argv(train, out, tiny_bert), out)
        assert results["train_examples"] + results["dev_examples"] == 17
    for suffix in (".tsv", ".jsonl"):
        inputs = write_rows(tmp_path / f"in{suffix}", [{"text": big}, {"text": "awful film"}])
        preds = tmp_path / f"preds{suffix}.jsonl"
        rc, _, err = cli(
            capsys, ["predict", str(trained), "--input", str(inputs), "--output", str(preds)]
        )
        assert rc == 0, err
        assert len(preds.read_text().splitlines()) == 2


# ---- named tasks --------------------------------------------------------------------------------


def write_sst2_split(folder: Path, split: str, label: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [f"{r['text']}\t{label or (1 if r['label'] == 'pos' else 0)}\n" for r in good_rows()]
    path = folder / f"{split}.tsv"
    path.write_text("sentence\tlabel\n" + "".join(rows))
    return path


def test_task_split_missing_from_data_dir(tiny_bert, tmp_path, capsys):
    root = tmp_path / "corpora" / "SST-2"
    write_sst2_split(root, "dev")  # a data dir with dev.tsv but no train.tsv
    out = tmp_path / "run"
    argv = ["train", "--task", "sst2", "--data-dir", str(tmp_path / "corpora"), "--no-download"]
    fails(
        capsys,
        [*argv, "--model", str(tiny_bert), "--output", str(out), *FAST],
        f"task sst2: no train split in {root} (expected {root / 'train.tsv'})",
        nothing_at=out,
    )


def test_task_without_any_local_copy(tiny_bert, tmp_path, capsys):
    empty = tmp_path / "corpora"
    empty.mkdir()
    out = tmp_path / "run"
    argv = ["train", "--task", "sst2", "--data-dir", str(empty), "--no-download"]
    fails(
        capsys,
        [*argv, "--model", str(tiny_bert), "--output", str(out), *FAST],
        "task sst2: no local copy and no download (downloads are off)",
        f"--data-dir {empty}",
        nothing_at=out,
    )


def test_task_file_with_a_foreign_label(tiny_bert, tmp_path, capsys):
    path = write_sst2_split(tmp_path / "corpora" / "SST-2", "train", label="positive")
    out = tmp_path / "run"
    argv = ["train", "--task", "sst2", "--data-dir", str(tmp_path / "corpora"), "--no-download"]
    fails(
        capsys,
        [*argv, "--model", str(tiny_bert), "--output", str(out), *FAST],
        f"{path}:",
        "label 'positive' is not one of task sst2's labels (0, 1)",
        nothing_at=out,
    )


# ---- model folders ------------------------------------------------------------------------------


def model_copy(tiny_bert: Path, tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    shutil.copytree(tiny_bert, folder)
    return folder


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **changes}))


class Evil:
    """Unpickling this would create a file: a stand-in for code run by a pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def damage(folder: Path, how: str, tmp_path: Path) -> list[str]:
    """Damage the model folder ``how``; the parts the error must name."""
    weights = folder / "model.safetensors"
    if how == "no-config":
        (folder / "config.json").unlink()
        return [f"--model {folder}: no config.json in the folder"]
    if how == "no-weights":
        weights.unlink()
        return [f"--model {folder}: no weights in the folder"]
    if how == "no-tokenizer":
        (folder / "vocab.txt").unlink()
        (folder / "tokenizer.json").unlink()
        return [f"--model {folder}: no tokenizer in the folder"]
    if how == "truncated-safetensors":
        truncate(weights)
        return [f"{weights}: damaged or truncated safetensors file", "download the model again"]
    if how == "tiny-safetensors":
        truncate(weights, keep=0.00005)
        return [f"{weights}: damaged or truncated safetensors file (", "header too small"]
    if how == "hidden-size-mismatch":
        edit_config(folder, hidden_size=48)
        return [
            f"{folder / 'config.json'}: hidden_size is 48 but model.safetensors has "
            "embeddings.word_embeddings.weight of shape (",
            "from different models",
        ]
    if how == "layer-count-mismatch":
        edit_config(folder, num_hidden_layers=4)
        return [f"{folder / 'config.json'}: num_hidden_layers is 4 but model.safetensors holds 2"]
    if how == "position-mismatch":
        edit_config(folder, max_position_embeddings=128)
        return [f"{folder / 'config.json'}: max_position_embeddings is 128 but model.safetensors"]
    if how == "config-not-json":
        (folder / "config.json").write_text('{"model_type": "bert",')
        return [f"{folder / 'config.json'}: not valid JSON ("]
    if how == "vocab-not-utf8":
        (folder / "tokenizer.json").unlink()
        (folder / "vocab.txt").write_bytes(b"[PAD]\n\xff\xfe\n")
        return [f"{folder / 'vocab.txt'}: bytes that are not UTF-8 at byte 6"]
    if how == "tokenizer-json-truncated":
        truncate(folder / "tokenizer.json")
        return [f"{folder / 'tokenizer.json'}: not valid JSON ("]
    if how == "pickled-object-in-bin":
        weights.unlink()
        marker = tmp_path / "unpickled"
        torch.save(
            {"embeddings.word_embeddings.weight": torch.zeros(2), "x": Evil(marker)},
            folder / "pytorch_model.bin",
        )
        return [f"{folder / 'pytorch_model.bin'}: holds Python objects, not just tensors; refusing"]
    if how == "truncated-bin":
        from safetensors.torch import load_file

        state = load_file(str(weights))
        weights.unlink()
        torch.save(state, folder / "pytorch_model.bin")
        truncate(folder / "pytorch_model.bin")
        return [f"{folder / 'pytorch_model.bin'}: damaged or truncated ("]
    raise AssertionError(how)


MODEL_DAMAGE = [
    "no-config",
    "no-weights",
    "no-tokenizer",
    "truncated-safetensors",
    "tiny-safetensors",
    "hidden-size-mismatch",
    "layer-count-mismatch",
    "position-mismatch",
    "config-not-json",
    "vocab-not-utf8",
    "tokenizer-json-truncated",
    "pickled-object-in-bin",
    "truncated-bin",
]


@pytest.mark.parametrize("how", MODEL_DAMAGE)
def test_bad_model_folder(tiny_bert, tmp_path, capsys, how):
    folder = model_copy(tiny_bert, tmp_path, "model")
    expected = damage(folder, how, tmp_path)
    fails_to_train(capsys, tmp_path, folder, *expected)
    assert not (tmp_path / "unpickled").exists()  # nothing in a user's pickle ever ran


def test_weights_of_another_model_fail_in_one_line(tiny_bert, tmp_path, capsys):
    from safetensors.torch import save_file

    folder = model_copy(tiny_bert, tmp_path, "model")
    save_file({"foo.weight": torch.zeros(3)}, str(folder / "model.safetensors"))
    fails_to_train(
        capsys,
        tmp_path,
        folder,
        f"{folder / 'model.safetensors'}: 37 encoder weights that config.json describes are missing",
    )


def write_d2l(folder: Path) -> Path:
    """A small checkpoint in the book's layout: vocab.json and pretrained.params."""
    from bertfit.models.d2l import D2L_SPECIAL, D2LBertForSequenceClassification, D2LConfig

    vocab = [*D2L_SPECIAL, *WORDS]
    config = D2LConfig(len(vocab), 32, 64, 1, 2, 64)
    state = D2LBertForSequenceClassification(config, 2).state_dict()
    folder.mkdir()
    (folder / "vocab.json").write_text(json.dumps(vocab))
    torch.save(
        {k: v for k, v in state.items() if not k.startswith("output.")},
        folder / "pretrained.params",
    )
    return folder


def test_damaged_d2l_checkpoint(tmp_path, capsys):
    folder = write_d2l(tmp_path / "bert.small.torch")
    train = write_rows(tmp_path / "train.csv", good_rows())
    out = tmp_path / "run"
    params = folder / "pretrained.params"
    truncate(params)
    argv = train_argv(train, out, folder)
    fails(capsys, argv, f"{params}: cannot load PyTorch state dict (", nothing_at=out)

    params.write_bytes(b"")
    fails(capsys, argv, f"{params}: cannot load PyTorch state dict (", nothing_at=out)

    torch.save({"encoder.token_embedding.weight": Evil(tmp_path / "unpickled")}, params)
    fails(
        capsys,
        argv,
        f"{params}: cannot load PyTorch state dict: it holds Python objects, not just tensors; "
        "refusing to unpickle it",
        nothing_at=out,
    )
    assert not (tmp_path / "unpickled").exists()

    (folder / "vocab.json").write_text('["<unk>", ')
    fails(capsys, argv, f"{folder / 'vocab.json'}: cannot read (", nothing_at=out)


def test_truncated_d2l_zip(tmp_path, capsys):
    folder = write_d2l(tmp_path / "bert.small.torch")
    archive = tmp_path / "bert.small.torch.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name in ("vocab.json", "pretrained.params"):
            zf.write(folder / name, f"bert.small.torch/{name}")
    truncate(archive)
    fails_to_train(
        capsys,
        tmp_path,
        archive,
        f"--model {archive}: not a readable zip file (damaged or truncated?)",
    )


# ---- trained runs: predict and evaluate ---------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tiny_bert, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BERTFIT_CACHE", str(root / "cache"))
        train = write_rows(root / "train.csv", marker_rows(24, seed=5))
        assert main(train_argv(train, root / "run", tiny_bert, "--keep-checkpoints")) == 0
    return root / "run"


def test_predict_on_a_folder_that_is_not_a_finished_run(trained, tmp_path, capsys):
    preds = tmp_path / "preds.jsonl"
    inputs = write_rows(tmp_path / "in.jsonl", [{"text": "great movie"}])
    argv = lambda run: ["predict", str(run), "--input", str(inputs), "--output", str(preds)]  # noqa: E731
    fails(
        capsys,
        argv(tmp_path / "nowhere"),
        f"{tmp_path / 'nowhere'}: no such run directory",
        nothing_at=preds,
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    fails(
        capsys,
        argv(empty),
        f"{empty}: not a bertfit run directory (no bertfit.json)",
        nothing_at=preds,
    )
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    shutil.copy(trained / "bertfit.json", unfinished)
    fails(
        capsys,
        argv(unfinished),
        f"{unfinished}: the run did not finish (no results.json)",
        nothing_at=preds,
    )
    damaged = tmp_path / "damaged"
    shutil.copytree(trained, damaged)
    (damaged / "bertfit.json").write_text("{")
    fails(capsys, argv(damaged), f"{damaged}: damaged run files (", nothing_at=preds)


def test_predict_with_damaged_weights_in_the_run(trained, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    truncate(run / "model.safetensors")
    preds = tmp_path / "preds.csv"
    inputs = write_rows(tmp_path / "in.jsonl", [{"text": "great movie"}])
    fails(
        capsys,
        ["predict", str(run), "--input", str(inputs), "--output", str(preds)],
        f"{run / 'model.safetensors'}: damaged or truncated safetensors file",
        nothing_at=preds,
    )


BAD_PREDICT_INPUTS = [
    ("invalid-json", "in.jsonl", b'{"text": "great"}\n{"text": great}\n', "{p}:2: invalid JSON"),
    (
        "no-text-column",
        "in.csv",
        csv_lines("sentence", "great movie"),
        "{p}: no column 'text' for --text-column",
    ),
    (
        "empty-text",
        "in.csv",
        csv_lines("text", "great movie", '""'),
        "{p}: 1 row with an empty text (line 3)",
    ),
    ("latin-1", "in.tsv", b"text\ncaf\xe9\n", "{p}:2: bytes that are not UTF-8"),
    ("header-only", "in.tsv", b"text\n", "{p}: only a header line, no data rows"),
    ("nul-byte", "in.jsonl", b'{"text": "a\x00"}\n', "{p}:1: NUL byte in the file"),
]


def test_predict_input_is_a_directory_and_output_has_no_known_type(trained, tmp_path, capsys):
    preds = tmp_path / "preds.jsonl"
    argv = ["predict", str(trained), "--input", str(tmp_path), "--output", str(preds)]
    fails(capsys, argv, f"{tmp_path}: is a directory, expected a data file", nothing_at=preds)
    inputs = write_rows(tmp_path / "in.jsonl", [{"text": "great movie"}])
    preds = tmp_path / "preds.xlsx"
    argv = ["predict", str(trained), "--input", str(inputs), "--output", str(preds)]
    fails(capsys, argv, f"{preds}: unknown file type '.xlsx'", nothing_at=preds)


BAD_EVAL_DATA = [
    ("nul-byte", "dev.csv", b"text,label\ngreat\x00,pos\n", "{p}:2: NUL byte in the file"),
    (
        "unseen-label",
        "dev.csv",
        csv_lines("text,label", "great movie,pos", "the plot,maybe"),
        "{p}:3: label 'maybe' does not occur in the training data (known labels: neg, pos)",
    ),
    (
        "missing-label",
        "dev.jsonl",
        jsonl({"text": "great movie", "label": "pos"}, {"text": "the plot"}),
        "{p}: 1 row with an empty text or a missing label (line 2)",
    ),
    ("wrong-width", "dev.tsv", csv_lines("text\tlabel", "a\tb\tc"), "{p}:2: expected 2 fields"),
]


BAD_RUN_INPUTS = [("predict", *case) for case in BAD_PREDICT_INPUTS] + [
    ("evaluate", *case) for case in BAD_EVAL_DATA
]


@pytest.mark.parametrize(
    "command,name,content,expected",
    [(case[0], *case[2:]) for case in BAD_RUN_INPUTS],
    ids=[f"{case[0]}-{case[1]}" for case in BAD_RUN_INPUTS],
)
def test_predict_or_evaluate_with_a_bad_file(
    trained, tmp_path, capsys, command, name, content, expected
):
    path = tmp_path / name
    path.write_bytes(content)
    preds = tmp_path / "preds.jsonl"
    argv = ["predict", str(trained), "--input", str(path), "--output", str(preds)]
    if command == "evaluate":
        argv = ["evaluate", str(trained), "--data", str(path)]
    fails(capsys, argv, expected.format(p=path), nothing_at=preds)


def test_evaluate_on_a_task_split_that_is_missing(trained, tmp_path, capsys):
    root = tmp_path / "corpora" / "SST-2"
    write_sst2_split(root, "train")
    argv = ["evaluate", str(trained), "--task", "sst2", "--data-dir", str(tmp_path / "corpora")]
    fails(
        capsys,
        [*argv, "--no-download"],
        f"task sst2: no dev split in {root} (expected {root / 'dev.tsv'})",
        nothing_at=tmp_path / "none",
    )


# ---- flag combinations --------------------------------------------------------------------------

BAD_TRAIN_FLAGS = [
    (["--regression", "--multi-label"], "--regression and --multi-label exclude each other"),
    (["--epochs", "-1"], "--epochs must be at least 1, got -1"),
    (["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
    (["--max-length", "4"], "--max-length must be at least 8, got 4"),
    (["--dev-fraction", "1.5"], "--dev-fraction must be between 0 and 1, got 1.5"),
    (["--task", "sst2"], "give exactly one of --train FILE or --task NAME"),
    (["--tune-thresholds"], "--tune-thresholds goes with --multi-label"),
    (["--lr", "0"], "--lr must be positive, got 0.0"),
    (["--warmup-ratio", "1"], "--warmup-ratio must be in [0, 1), got 1.0"),
    (["--metric", "spearman"], "--metric spearman does not fit this problem"),
    (["--dev-fraction", "0.2", "--dev", "{dev}"], "give --dev or --dev-fraction, not both"),
    (["--objective", "cosine"], "--objective needs text pairs: give --pair-column"),
    (["--eval-steps", "0"], "--eval-steps must be at least 1, got 0"),
    (["--early-stopping-patience", "0"], "--early-stopping-patience must be at least 1, got 0"),
    (["--weight-decay", "-1"], "--weight-decay must be 0 or more, got -1.0"),
    (["--max-grad-norm", "-1"], "--max-grad-norm must be 0 (off) or more, got -1.0"),
    (["--threads", "0"], "--threads must be at least 1, got 0"),
    (["--seed", "-1"], "--seed must be between 0 and 4294967295, got -1"),
    (["--save-steps", "0"], "--save-steps must be at least 1, got 0"),
    (["--save-total-limit", "-1"], "--save-total-limit must be 0 (no checkpoints) or more, got -1"),
    (["--resume", "auto", "--overwrite"], "--resume continues a run and --overwrite replaces it"),
]


@pytest.mark.parametrize(
    "extra,expected", BAD_TRAIN_FLAGS, ids=[" ".join(c[0]) for c in BAD_TRAIN_FLAGS]
)
def test_invalid_train_flags(tiny_bert, tmp_path, capsys, extra, expected):
    train = write_rows(tmp_path / "train.csv", good_rows())
    dev = write_rows(tmp_path / "dev.csv", good_rows())
    out = tmp_path / "run"
    argv = train_argv(train, out, tiny_bert, *[e.format(dev=dev) for e in extra])
    fails(capsys, argv, expected, nothing_at=out)


def test_max_length_above_the_models_positions(tiny_bert, tmp_path, capsys):
    train = write_rows(tmp_path / "train.csv", good_rows())
    out = tmp_path / "run"
    for length in ("65", "512"):  # even when every text is short
        fails(
            capsys,
            train_argv(train, out, tiny_bert, "--max-length", length),
            f"--max-length {length} is more than the model's 64 positions "
            f"(max_position_embeddings 64 in {tiny_bert / 'config.json'}); use --max-length 64",
            nothing_at=out,
        )


def test_invalid_predict_and_evaluate_flags(trained, tmp_path, capsys):
    inputs = write_rows(tmp_path / "in.jsonl", [{"text": "great movie"}])
    preds = tmp_path / "preds.jsonl"
    cases = [
        (
            ["predict", str(trained), "--text", "a", "--input", str(inputs)],
            "give exactly one of --text or --input",
        ),
        (
            ["predict", str(trained), "--text", "a", "--output", str(preds)],
            "--output goes with --input",
        ),
        (
            [
                "predict",
                str(trained),
                "--input",
                str(inputs),
                "--output",
                str(preds),
                "--batch-size",
                "0",
            ],
            "--batch-size must be at least 1",
        ),
        (["predict", str(trained), "--text", "a", "--pair", "b"], "trained on single texts"),
        (
            ["evaluate", str(trained), "--data", str(inputs), "--task", "sst2"],
            "give exactly one of --data FILE or --task NAME",
        ),
        (
            ["evaluate", str(trained), "--data", str(inputs), "--split", "dev"],
            "--split goes with --task",
        ),
    ]
    for argv, expected in cases:
        fails(capsys, argv, expected, nothing_at=preds)


# ---- untrusted files ----------------------------------------------------------------------------


def test_d2l_zip_with_a_path_traversal_member_is_refused(tmp_path, capsys):
    folder = write_d2l(tmp_path / "bert.small.torch")
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name in ("vocab.json", "pretrained.params"):
            zf.write(folder / name, name)
        zf.writestr("../evil.txt", "boom")
    fails_to_train(
        capsys, tmp_path, archive, f"{archive}: refusing unsafe zip member name '../evil.txt'"
    )
    assert not (tmp_path / "evil.txt").exists()


def test_a_pickle_in_the_packing_cache_is_never_unpickled(tokenizers_for_cache, tmp_path):
    """A cache entry is read with allow_pickle=False: an object array is a damaged entry, rebuilt."""
    from bertfit.data.packing import cache_key, pack_cached, pack_texts

    tok = tokenizers_for_cache
    texts, marker = ["great movie", "awful film"], tmp_path / "unpickled"
    entry = tmp_path / "packed" / f"{cache_key(tok, texts, None, 16, 'longest-first')}.npz"
    entry.parent.mkdir()
    evil = np.empty(1, dtype=object)
    evil[0] = Evil(marker)
    with open(entry, "wb") as handle:
        np.savez(handle, ids=evil, types=evil, offsets=evil)
    packed = pack_cached(tok, texts, None, 16, "longest-first", tmp_path)
    assert not marker.exists()
    assert packed.ids.tolist() == pack_texts(tok, texts, None, 16, "longest-first").ids.tolist()


@pytest.fixture
def tokenizers_for_cache(tiny_bert):
    from bertfit.models.classifier import load_tokenizer
    from bertfit.models.encoders import Encoder

    return load_tokenizer(Encoder("hf", tiny_bert, "tiny"))


# ---- checkpoint and resume options --------------------------------------------------------------


def test_invalid_resume_and_checkpoint_options(tiny_bert, trained, tmp_path, capsys):
    train = write_rows(tmp_path / "train.csv", good_rows())
    out = tmp_path / "run"
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("mine")
    fails(
        capsys,
        train_argv(train, out, tiny_bert, "--resume", str(tmp_path / "plain")),
        f"--resume continues {tmp_path / 'plain'} in place; drop --output",
        nothing_at=out,
    )
    fails(
        capsys,
        ["train", "--resume", str(tmp_path / "plain")],
        f"--resume {tmp_path / 'plain'}: not a bertfit run directory (no bertfit.json)",
        nothing_at=out,
    )
    assert (tmp_path / "plain" / "notes.txt").read_text() == "mine"
    fails(
        capsys,
        ["train", "--output", str(tmp_path / "plain"), "--resume", "auto", "--train", str(train)],
        f"--output {tmp_path / 'plain'}: not a bertfit run directory",
        nothing_at=out,
    )
    fails(capsys, ["train"], "give --output DIR (or --resume RUN_DIR", nothing_at=out)
    fails(
        capsys,
        ["predict", str(trained), "--checkpoint", "99", "--text", "a"],
        f"{trained}: no checkpoint '99'; choose best, last or one of checkpoint-",
        nothing_at=tmp_path / "p.jsonl",
    )
