"""Read labelled text from CSV, TSV, JSONL (gzip too), Parquet and .txt files into ``Examples``.

Every problem is reported as one line naming the file, the line (in Parquet files: the row,
numbered from 1, written the same way, ``train.parquet:3: ...``) and the field.

The same rules hold for every command:

- A ``.txt`` file is one text per non-blank line: no header, no label, no pair column (given a
  ``delimiter``, it is read as a table with that delimiter instead).
- A CSV/TSV file has a header row naming its columns, and a column is named or numbered (0-based,
  by position). When only numbers are given, the first row is a header only if it looks like
  one (``layout.looks_like_header``); ``header=False`` (``--no-header``) reads every row as data.
- The delimiter comes from the extension unless ``delimiter`` is given; a missing column in a file
  whose header splits at another delimiter says which (``--delimiter ';'``).
- TSV is read with quoting off, as GLUE's own loader does, so quotes inside texts stay text;
  ``quoting="csv"`` reads the double-quoted fields that pandas writes, and a TSV whose fields look
  like that gets one warning naming that option.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import gzip
import io
import json
import logging
import os
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from bertfit.data.examples import Columns, Examples
from bertfit.data.labels import json_type
from bertfit.data.layout import (
    DELIMITERS,
    csv_dialect,
    delimiter_of,
    first_rows,
    looks_like_header,
    other_delimiter,
    warn_if_quoted,
)
from bertfit.data.parquet import parquet_records, read_parquet
from bertfit.data.records import WRONG_WIDTH, Keys, ReadOptions, Source, collect, column_keys
from bertfit.errors import DataError

FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".txt": "txt",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
}

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
log = logging.getLogger("bertfit")


def file_format(path: str | os.PathLike) -> str:
    """csv, tsv, txt, jsonl or parquet, from the extension (``.gz`` is looked through)."""
    name = str(path).lower()
    gzipped = name.endswith(".gz")
    suffix = Path(name.removesuffix(".gz")).suffix
    if suffix not in FORMATS:
        raise DataError(
            f"{path}: unknown file type {suffix or '(none)'!r}; use .csv, .tsv or .jsonl "
            "(optionally .gz), or .parquet"
        )
    if gzipped and FORMATS[suffix] == "parquet":
        raise DataError(
            f"{path}: Parquet compresses inside the file; give the .parquet file itself"
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
    """csv, tsv, txt, jsonl or parquet for an existing data file; a DataError for a folder, a missing
    file or an unknown type (a missing file with an unknown extension is reported by its type)."""
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


class Table(NamedTuple):
    """A file opened for reading: its header, its records, and its first rows as parsed (for
    the guesses about the header and the delimiter; empty for .txt, JSONL and Parquet)."""

    header: list[str] | None
    records: Iterator
    first: list[list[str]]
    delimiter: str | None = None


def iter_records(
    path: str | os.PathLike,
    has_header: bool | None,
    skip_bad_rows: bool = False,
    *,
    delimiter: str | None = None,
    quoting: str | None = None,
) -> tuple[list[str] | None, Iterator]:
    """(header, records): each record is (line number, dict for JSONL or list of fields).

    ``has_header`` None: the first CSV/TSV row is a header if it looks like one. A .txt file
    gives ``[line]`` records, one per non-blank line, unless a ``delimiter`` is given. Parquet
    files give their column names as the header and (row number, dict) records, rows numbered
    from 1; ``has_header`` does not apply to them, nor to JSONL.
    With ``skip_bad_rows`` a row of the wrong width comes back as the string ``WRONG_WIDTH``.
    """
    table = open_table(path, has_header, skip_bad_rows, delimiter_of(delimiter), quoting)
    return table.header, table.records


def open_table(
    path, has_header: bool | None, skip_bad_rows: bool, delimiter: str | None, quoting: str | None
) -> Table:
    """``iter_records`` with the first rows as well; ``delimiter`` is one character or None."""
    fmt = data_file_format(path)
    if fmt == "parquet":
        return Table(*parquet_records(path), [])
    text = read_text(path)
    if fmt == "jsonl":
        return Table(None, _jsonl_records(path, text), [])
    if fmt == "txt" and delimiter is None:
        return Table(None, _line_records(text), [])
    layout = csv_dialect(fmt, delimiter, quoting)
    first = first_rows(text, layout)
    if quoting is None and layout["quoting"] == csv.QUOTE_NONE:
        warn_if_quoted(path, text, first, layout["delimiter"])
    if has_header is None:
        has_header = looks_like_header(first)
        if has_header:
            log.info(
                f"{path}:1: the first row ({', '.join(map(repr, first[0]))}) looks like column "
                "names and is read as the header; pass --no-header to read it as data"
            )
    reader = csv.reader(io.StringIO(text, newline=""), **layout)
    header = None
    if has_header:
        header = [h.strip() for h in next(reader)]
    records = _csv_records(path, reader, header, skip_bad_rows)
    return Table(header, records, first, layout["delimiter"])


def _line_records(text: str) -> Iterator:
    for number, line in enumerate(split_lines(text), 1):
        if line.strip():
            yield number, [line.strip()]


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
                f"{path}:{number}: expected a JSON object per line, found {json_type(record)}"
            )
        yield number, record


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


def read_examples(path: str | os.PathLike, columns: Columns, **options: Any) -> Examples:
    """Read texts, optional pair texts and (if ``with_labels``) labels from a data file.

    CSV, TSV, JSON Lines (each optionally gzipped), Parquet (which needs pyarrow) and .txt (one
    text per line, so neither labels nor pairs). Rows with an empty text or a missing label stop
    the read with a list of their line numbers, unless ``skip_bad_rows``. ``label_kind`` is ``single`` (a string), ``multi`` (a JSON list or a
    ``label_separator``-separated string) or ``score`` (a float, for regression). Rows whose label
    is in ``drop_labels`` (SNLI's ``-``) are left out and counted; ``where=(column, value)`` keeps
    only the rows with that value (SICK's SemEval_set). ``header``, ``delimiter`` (one character,
    default by extension) and ``quoting`` (``csv`` or ``none``) say how a CSV/TSV file is laid
    out (see the module's docstring); ``keep_fields`` also keeps every column of each row in
    ``Examples.fields``. The keyword arguments are the fields of ``ReadOptions``.
    Example: ``read_examples("train.tsv", Columns("sentence", None, "label"))``,
    ``read_examples("scores.csv", Columns("0", None, "1"), delimiter=";", header=False)``.
    """
    given = ReadOptions(**options)
    options = dataclasses.replace(
        given, delimiter=delimiter_of(given.delimiter), drop_labels=tuple(given.drop_labels)
    )
    fmt = data_file_format(path)
    if fmt == "parquet":
        return read_parquet(path, columns, options)
    source = Source(str(path))
    if fmt == "txt" and options.delimiter is None:
        return _read_lines(source, columns, options)
    table = open_table(
        path,
        _has_header(source, fmt, columns, options),
        options.skip_bad_rows,
        options.delimiter,
        options.quoting,
    )
    if table.delimiter is not None:
        _check_delimiter(source, table, columns, options)
    keys = column_keys(source, table.header, columns, options)
    return collect(
        source, table.records, keys, options, header_line=table.header is not None,
        header=table.header,
    )  # fmt: skip


def _read_lines(source: Source, columns: Columns, options: ReadOptions) -> Examples:
    """A .txt file: one text per non-blank line, whatever the text column is called."""
    if options.with_labels or columns.pair is not None:
        what = "labels" if options.with_labels else "second text for --pair-column"
        raise DataError(
            f"{source.name}: a .txt file holds one text per line and no {what}; give this data "
            "as .tsv, .csv or .jsonl (or pass --delimiter to read the file's columns)"
        )
    _, records = iter_records(source.name, False)
    return collect(source, records, Keys(0), options)


def _has_header(source: Source, fmt: str, columns: Columns, options: ReadOptions) -> bool | None:
    """False for JSON Lines and ``header=False``; None (the first row decides) when only column
    numbers are given; else True. Names without a header are an error."""
    if fmt == "jsonl":
        return False
    numbers = columns.numeric(options.with_labels)
    if options.header:
        return None if numbers else True
    if not numbers:
        named = ", ".join(
            f"{flag} {column!r}"
            for flag, column in columns.flags(options.with_labels)
            if not column.isdigit()
        )
        raise DataError(
            f"{source.name}: --no-header reads every row as data, so columns are given by "
            f"number (0-based); got {named}"
        )
    return False


def _check_delimiter(source: Source, table: Table, columns: Columns, options: ReadOptions) -> None:
    """A wanted column missing from a file whose first row would split into more fields at
    another delimiter: say which delimiter, and the option that reads it."""
    row = table.header if table.header is not None else (table.first or [[]])[0]
    width = len(row)
    missing = [
        (flag, column)
        for flag, column in columns.flags(options.with_labels)
        if not (column.isdigit() and int(column) < width)
        and (table.header is None or column not in table.header)
    ]
    guess = other_delimiter(row, table.delimiter)
    if not missing or guess is None:
        return
    flag, column = missing[0]
    what = "the header" if table.header is not None else "the first row"
    fix = "\\t" if guess == "\t" else guess
    line = table.delimiter.join(row)
    shown = line if len(line) <= 60 else line[:57] + "..."
    raise DataError(
        f"{source.name}:1: no column {column!r} for {flag}; {what} {shown!r} looks "
        f"{DELIMITERS[guess]}-separated, not {DELIMITERS.get(table.delimiter, repr(table.delimiter))}"
        f"-separated; pass --delimiter '{fix}'"
    )
