"""Read labelled text from CSV, TSV and JSONL files (gzip too) into plain Python lists.

Every problem is reported as one line naming the file, the line and the field.
TSV is read with quoting off, as GLUE's own loader does, so quotes inside texts stay text.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import os
import random
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bertfit.errors import DataError

FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".txt": "tsv",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
}
MISSING = object()

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


@dataclass
class Examples:
    """Texts (and optional pair texts and labels) read from one file, with their line numbers."""

    path: str
    texts: list[str]
    pairs: list[str] | None = None
    labels: list[str] | None = None
    lines: list[int] = field(default_factory=list)
    label_is_int: bool = False
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> rows left out

    @property
    def rows_read(self) -> int:
        return len(self.texts) + sum(self.dropped.values())

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: list[int]) -> Examples:
        """The examples at ``indices``, in that order."""
        pick = lambda xs: None if xs is None else [xs[i] for i in indices]  # noqa: E731
        return Examples(
            self.path,
            pick(self.texts),
            pick(self.pairs),
            pick(self.labels),
            pick(self.lines),
            self.label_is_int,
            dict(self.dropped),
        )

    def describe(self) -> str:
        """ "1,000 rows read, 12 dropped (12 empty text)": what a reader did, for the log."""
        line = f"{self.rows_read:,} rows read"
        if self.dropped:
            why = ", ".join(f"{n:,} {reason}" for reason, n in sorted(self.dropped.items()))
            line += f", {sum(self.dropped.values()):,} dropped ({why})"
        return line


@dataclass
class Columns:
    """Column names (or 0-based numbers) and the CLI flags that set them, for error messages."""

    text: str
    pair: str | None = None
    label: str | None = None

    def numeric(self) -> bool:
        given = [c for c in (self.text, self.pair, self.label) if c is not None]
        return all(str(c).isdigit() for c in given)


def file_format(path: str | os.PathLike) -> str:
    """csv, tsv or jsonl, from the extension (``.gz`` is looked through)."""
    name = str(path).lower()
    if name.endswith(".gz"):
        name = name[:-3]
    suffix = Path(name).suffix
    if suffix not in FORMATS:
        raise DataError(
            f"{path}: unknown file type {suffix or '(none)'!r}; use .csv, .tsv or .jsonl (optionally .gz)"
        )
    return FORMATS[suffix]


BYTE_ORDER_MARKS = (  # UTF-32 first: its little-endian mark starts with UTF-16's
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)


def check_file(path: str | os.PathLike) -> Path:
    """``path`` as a ``Path`` if it is an existing regular file, else a DataError saying what it is."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a data file")
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if not path.is_file():
        raise DataError(f"{path}: not a regular file, expected a data file")
    return path


def data_file_format(path: str | os.PathLike) -> str:
    """csv, tsv or jsonl for an existing data file; a DataError for a folder, a missing file or an
    unknown type (a missing file with an unknown extension is reported by its type)."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a data file")
    if not path.exists() and not Path(path.name.lower().removesuffix(".gz")).suffix:
        raise DataError(f"{path}: no such file")
    fmt = file_format(path)
    check_file(path)
    return fmt


def split_lines(text: str) -> list[str]:
    """Lines ended by \\n, \\r\\n or \\r only; ``str.splitlines`` would also cut at \\x0b, \\x1c,
    \\x85 or U+2028, which may stand inside a JSON string or a text."""
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def read_text(path: str | os.PathLike) -> str:
    """The whole file decoded as UTF-8 (a BOM is dropped); undecodable bytes name their line."""
    path = check_file(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"{path}: cannot read: {' '.join(str(err).split())}") from None
    for mark, encoding in BYTE_ORDER_MARKS:
        if raw.startswith(mark):
            raise DataError(
                f"{path}: the file is {encoding} (it starts with a {encoding} byte-order mark); "
                "save it as UTF-8"
            )
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataError(
            f"{path}:{line}: bytes that are not UTF-8 ({raw[err.start : err.start + 4]!r}); "
            "save the file as UTF-8"
        ) from None
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        hint = "is it really a text file?"
        if raw.count(b"\x00") * 3 >= len(raw):  # every other byte: UTF-16 without a BOM
            hint = "it looks like UTF-16; save it as UTF-8"
        raise DataError(f"{path}:{line}: NUL byte in the file; {hint}")
    if not text.strip():
        raise DataError(f"{path}: empty file")
    return text


def iter_records(
    path: str | os.PathLike, has_header: bool, skip_bad_rows: bool = False
) -> tuple[list[str] | None, Iterator]:
    """(header, records): each record is (line number, dict for JSONL or list of fields).

    With ``skip_bad_rows`` a row of the wrong width comes back as the string ``WRONG_WIDTH``.
    """
    fmt = data_file_format(path)
    text = read_text(path)
    if fmt == "jsonl":
        return None, _jsonl_records(path, text)
    if fmt == "tsv":
        reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t", quoting=csv.QUOTE_NONE)
    else:
        reader = csv.reader(io.StringIO(text, newline=""))
    header = None
    if has_header:
        header = next(reader)
        header = [h.strip() for h in header]
    return header, _csv_records(path, reader, header, skip_bad_rows)


def _jsonl_records(path, text: str) -> Iterator:
    first = True
    for number, line in enumerate(split_lines(text), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            if first and line.lstrip().startswith("["):
                raise DataError(
                    f"{path}:{number}: a JSON array, not JSON Lines; write one JSON object per line"
                ) from None
            raise DataError(
                f"{path}:{number}: invalid JSON ({err.msg}, column {err.colno})"
            ) from None
        except (ValueError, RecursionError) as err:  # a 5,000-digit number, deep nesting
            reason = " ".join(str(err).split()) or type(err).__name__
            raise DataError(f"{path}:{number}: invalid JSON ({reason})") from None
        first = False
        if not isinstance(record, dict):
            raise DataError(
                f"{path}:{number}: expected a JSON object per line, found {_json_type(record)}"
            )
        yield number, record


def _json_type(value) -> str:
    """The JSON name of a parsed value's type, for messages."""
    if isinstance(value, bool):
        return "true/false"
    return {dict: "an object", list: "an array", str: "a string", type(None): "null"}.get(
        type(value), "a number"
    )


WRONG_WIDTH = "wrong number of fields"


def _csv_records(path, reader, header: list[str] | None, skip_bad_rows: bool = False) -> Iterator:
    width = len(header) if header else None
    end = reader.line_num
    try:
        for row in reader:
            start, end = end + 1, reader.line_num  # a quoted field may span lines
            if not row or (len(row) == 1 and not row[0].strip() and width != 1):
                continue  # a blank line; in a one-column file "" is an empty text, not a blank
            if width is not None and len(row) != width:
                if skip_bad_rows:
                    yield reader.line_num, WRONG_WIDTH
                    continue
                if end > start:
                    raise DataError(
                        f"{path}:{start}: expected {width} fields as in the header, found "
                        f"{len(row)} in a row running from line {start} to {end}; is a quote "
                        f"on line {start} left open?"
                    )
                raise DataError(
                    f"{path}:{reader.line_num}: expected {width} fields as in the header, found {len(row)}"
                )
            yield reader.line_num, row
    except csv.Error as err:
        raise DataError(f"{path}:{reader.line_num}: malformed row ({err})") from None


def _column_index(path, header: list[str] | None, column: str, flag: str) -> int | str:
    if header is None:
        return int(column) if str(column).isdigit() else column
    if column in header:
        return header.index(column)
    raise DataError(
        f"{path}: no column {column!r} for {flag}; the file has columns: "
        + ", ".join(f"{i}={name!r}" for i, name in enumerate(header))
    )


def _get(record, key, path, line: int, flag: str):
    if isinstance(record, dict):
        if isinstance(key, int):
            raise DataError(f"{path}: {flag} {key} is a column number; JSONL rows need a key name")
        return record.get(key, MISSING)
    if isinstance(key, str):
        raise DataError(
            f"{path}: {flag} {key!r} needs a header row; give a column number (0-based)"
        )
    if key >= len(record):
        raise DataError(
            f"{path}:{line}: no field {key} for {flag}; the row has {len(record)} fields"
        )
    return record[key]


def _as_text(value, path=None, line: int = 0, flag: str = "--text-column") -> str | None:
    if value is MISSING or value is None:
        return None
    if isinstance(value, (list, dict)):
        raise DataError(f"{path}:{line}: {flag} holds {_json_type(value)}, expected a string")
    text = str(value)
    return text if text.strip() else None


def _as_label(value) -> str | None:
    if value is MISSING or value is None or isinstance(value, (list, dict)):
        return None
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text or None


LABEL_KINDS = ("single", "multi", "score")


def _parse_label(value, kind: str, separator: str, path, line: int):
    """A label in the form the problem needs: a string, a list of strings, or a float score."""
    if kind == "multi":
        if isinstance(value, list):
            return [str(v).strip() for v in value if str(v).strip()]
        if value is MISSING or value is None or isinstance(value, dict):
            return None
        return [part.strip() for part in str(value).split(separator) if part.strip()]
    if isinstance(value, (list, dict)):
        raise DataError(
            f"{path}:{line}: the label is {_json_type(value)}; expected "
            + (
                "a number"
                if kind == "score"
                else "a string or a number (several labels per row need --multi-label)"
            )
        )
    label = _as_label(value)
    if kind == "score" and label is not None:
        try:
            score = float(label)
        except ValueError:
            raise DataError(
                f"{path}:{line}: label {label!r} is not a number; --regression needs numeric scores"
            ) from None
        if score != score or score in (float("inf"), float("-inf")):
            raise DataError(f"{path}:{line}: label {label!r} is not a finite number")
        return score
    return label


def read_examples(
    path: str | os.PathLike,
    columns: Columns,
    *,
    with_labels: bool = True,
    limit: int | None = None,
    skip_bad_rows: bool = False,
    label_kind: str = "single",
    label_separator: str = "|",
    drop_labels: tuple[str, ...] = (),
    where: tuple[str, str] | None = None,
) -> Examples:
    """Read texts, optional pair texts and (if ``with_labels``) labels from a data file.

    Rows with an empty text or a missing label stop the read with a list of their line numbers,
    unless ``skip_bad_rows``. ``label_kind`` is ``single`` (a string), ``multi`` (a JSON list or a
    ``label_separator``-separated string) or ``score`` (a float, for regression). Rows whose label
    is in ``drop_labels`` (SNLI's ``-``) are left out and counted; ``where=(column, value)`` keeps
    only the rows with that value (SICK's SemEval_set).
    Example: ``read_examples("train.tsv", Columns("sentence", None, "label"))``.
    """
    header, records = iter_records(
        path,
        has_header=not columns.numeric() and data_file_format(path) != "jsonl",
        skip_bad_rows=skip_bad_rows,
    )
    text_key = _column_index(path, header, columns.text, "--text-column")
    pair_key = (
        None if columns.pair is None else _column_index(path, header, columns.pair, "--pair-column")
    )
    label_key = None
    if with_labels:
        label_key = _column_index(path, header, columns.label, "--label-column")
    where_key = None if where is None else _column_index(path, header, where[0], "split column")
    texts, pairs, labels, lines, bad = [], [], [], [], []
    dropped: dict[str, int] = {}
    rows_seen = 0
    label_types: dict[str, tuple[int, object]] = {}  # "number"/"name" -> first (line, value)

    def drop(reason: str, line: int) -> None:
        dropped[reason] = dropped.get(reason, 0) + 1
        if reason in ("empty text", "missing label"):
            bad.append(line)

    for line, record in records:
        if limit is not None and len(texts) >= limit:
            break
        rows_seen += 1
        if record is WRONG_WIDTH:
            drop(WRONG_WIDTH, line)
            continue
        if (
            where_key is not None
            and _get(record, where_key, path, line, "split column") != where[1]
        ):
            continue
        text = _as_text(_get(record, text_key, path, line, "--text-column"), path, line)
        pair = (
            None
            if pair_key is None
            else _as_text(
                _get(record, pair_key, path, line, "--pair-column"), path, line, "--pair-column"
            )
        )
        label = None
        if label_key is not None:
            raw = _get(record, label_key, path, line, "--label-column")
            label = _parse_label(raw, label_kind, label_separator, path, line)
            if label_kind == "single" and isinstance(record, dict) and label is not None:
                _check_label_type(path, line, raw, label, label_types)
            if label_kind == "single" and label in drop_labels:
                drop(f"label {label!r}", line)
                continue
        if text is None or (pair_key is not None and pair is None):
            drop("empty text", line)
            continue
        if label_key is not None and label is None:
            drop("missing label", line)
            continue
        texts.append(text)
        pairs.append(pair)
        labels.append(label)
        lines.append(line)
    if bad and not skip_bad_rows:
        shown = ", ".join(map(str, bad[:5])) + (", ..." if len(bad) > 5 else "")
        what = "an empty text or a missing label" if with_labels else "an empty text"
        rows = "1 row" if len(bad) == 1 else f"{len(bad)} rows"
        raise DataError(
            f"{path}: {rows} with {what} (line{'s' if len(bad) > 1 else ''} {shown}); fix "
            f"{'them' if len(bad) > 1 else 'it'} or pass --skip-bad-rows"
        )
    if not texts:
        if rows_seen == 0 and header is not None:
            raise DataError(f"{path}: only a header line, no data rows")
        if rows_seen == 0:
            raise DataError(f"{path}: no data rows")
        detail = f" ({Examples(str(path), [], dropped=dropped).describe()})" if dropped else ""
        raise DataError(f"{path}: no usable rows{detail}")
    label_is_int = with_labels and label_kind == "single" and all(map(_is_int, labels))
    return Examples(
        str(path),
        texts,
        pairs if pair_key is not None else None,
        labels if with_labels else None,
        lines,
        label_is_int,
        dropped,
    )


def _check_label_type(path, line: int, raw, label: str, seen: dict) -> None:
    """JSONL labels must not mix JSON numbers with names: ``1`` beside ``"pos"`` is a data error
    (numbers beside numeric strings such as ``"1"`` are the same labels and pass)."""
    if isinstance(raw, (bool, int, float)):
        kind = "number"
    elif _is_int(label) or _is_float(label):
        return
    else:
        kind = "name"
    seen.setdefault(kind, (line, raw))
    other = seen.get("name" if kind == "number" else "number")
    if other is not None:
        first_line, first = other
        raise DataError(
            f"{path}:{line}: label {json.dumps(raw)} is a {kind} but line {first_line} has the "
            f"{'number' if kind == 'name' else 'name'} {json.dumps(first)}; labels of one file "
            "must be all names or all numbers"
        )


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _is_int(text: str) -> bool:
    return text.lstrip("-").isdigit()


def label_set(labels: list, as_int: bool) -> list[str]:
    """The sorted label names: numerically when all are integers, else as strings.

    Multi-label rows (lists) contribute each of their labels.
    """
    unique = {x for label in labels for x in (label if isinstance(label, list) else [label])}
    return sorted(unique, key=int) if as_int else sorted(unique)


def check_known_labels(examples: Examples, names: list[str]) -> None:
    """A dev/test label never seen in training is an error naming it and its first line."""
    known = set(names)
    for labels, line in zip(examples.labels or [], examples.lines):
        for label in labels if isinstance(labels, list) else [labels]:
            if label in known:
                continue
            raise DataError(
                f"{examples.path}:{line}: label {label!r} does not occur in the training data "
                f"(known labels: {', '.join(names)})"
            )


def stratified_split(labels: list[str], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train indices, dev indices): ``fraction`` of each label's rows held out, chosen by seed."""
    by_label: dict[str, list[int]] = {}
    for index, label in enumerate(labels):
        by_label.setdefault(label, []).append(index)
    rng = random.Random(seed)
    dev: list[int] = []
    for label in sorted(by_label):
        members = by_label[label]
        rng.shuffle(members)
        take = round(len(members) * fraction)
        if len(members) >= 2:
            take = min(max(take, 1), len(members) - 1)
        dev.extend(members[:take])
    held = set(dev)
    return [i for i in range(len(labels)) if i not in held], sorted(dev)


def stratify_keys(labels: list, kind: str) -> list[str]:
    """What a held-out split is balanced on: the label, a score decile, or nothing (multi-label)."""
    if kind == "single":
        return list(labels)
    if kind == "score":
        ranks = sorted(range(len(labels)), key=labels.__getitem__)
        keys = [""] * len(labels)
        for rank, index in enumerate(ranks):
            keys[index] = str(rank * 10 // len(labels))
        return keys
    return [""] * len(labels)


def label_targets(values: list, labels: list[str], kind: str) -> np.ndarray:
    """Label ids (int64), scores (float32, ``kind="score"``) or 0/1 rows over ``labels``
    (float32, ``kind="multi"``): what the loss and the metrics compare outputs with."""
    if kind == "score":
        return np.asarray(values, dtype=np.float32)
    index = {label: i for i, label in enumerate(labels)}
    if kind == "multi":
        rows = np.zeros((len(values), len(labels)), dtype=np.float32)
        for row, names in enumerate(values):
            rows[row, [index[name] for name in names]] = 1.0
        return rows
    return np.asarray([index[label] for label in values], dtype=np.int64)
