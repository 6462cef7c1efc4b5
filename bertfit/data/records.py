"""From records to ``Examples``: the validation every source shares.

CSV/TSV rows, JSON Lines objects, Parquet rows and rows in memory all arrive here as
``(number, record)`` pairs, a record being a list of fields or a dict of column -> value.
``column_keys`` finds the text, pair and label columns once; ``collect`` checks each record the
same way whatever it came from: empty texts and missing labels stop the read (or are dropped with
``skip_bad_rows``), labels are parsed for the problem, and numbers beside names are refused.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from bertfit.data.examples import MISSING, Columns, Examples
from bertfit.data.labels import check_label_type, is_int_text, json_type, parse_label
from bertfit.errors import DataError

WRONG_WIDTH = "wrong number of fields"
BAD_ROW_REASONS = ("empty text", "missing label")


@dataclass(frozen=True)
class Source:
    """Where records come from, as messages name it.

    ``name`` starts every message and becomes ``Examples.path``; a row is named ``name:N`` (as
    compilers name a line). ``unit`` is what N counts: ``line`` in CSV, TSV and JSON Lines files,
    ``row`` in Parquet files and rows in memory (numbered from 1). ``holder`` says whose columns a
    missing-column message lists.
    """

    name: str
    unit: str = "line"
    holder: str = "the file has"

    def at(self, number: int) -> str:
        return f"{self.name}:{number}"


@dataclass(frozen=True)
class ReadOptions:
    """What to read and how strictly; the keyword arguments of ``read_examples``."""

    with_labels: bool = True
    limit: int | None = None
    skip_bad_rows: bool = False
    label_kind: str = "single"
    label_separator: str = "|"
    drop_labels: tuple[str, ...] = ()
    where: tuple[str, str] | None = None  # (column, value): keep only the rows with that value
    # how a CSV/TSV file is laid out (the other sources ignore these)
    header: bool = True  # False: every row is data, columns are given by number
    delimiter: str | None = None  # one character [default: by extension]
    quoting: str | None = None  # "csv" or "none" [default: csv, none for tab-separated files]
    keep_fields: bool = False  # also keep every column of each row (predictions carry them)


@dataclass(frozen=True)
class Keys:
    """How to find each wanted field in a record: a column name or a 0-based field number."""

    text: int | str
    pair: int | str | None = None
    label: int | str | None = None
    where: int | str | None = None

    def names(self) -> list:
        """The distinct keys in use, for sources that can read only those columns."""
        keys = (self.text, self.pair, self.label, self.where)
        return list(dict.fromkeys(k for k in keys if k is not None))


def column_keys(
    source: Source,
    header: list[str] | None,
    columns: Columns,
    options: ReadOptions,
    *,
    keyed: bool = False,
) -> Keys:
    """The ``Keys`` of ``columns`` given the source's column names (``header``, None if unknown).

    A column number (``"0"``) that is not a column's name picks the column at that position,
    whether the source's records are lists (CSV/TSV) or dicts whose column names are known
    (``keyed``: Parquet, rows in memory). A column not in ``header`` is an error that lists the
    columns there are.
    """

    def key(column, flag: str):
        return _column_key(source, header, column, flag, keyed)

    return Keys(
        key(columns.text, "--text-column"),
        None if columns.pair is None else key(columns.pair, "--pair-column"),
        key(columns.label, "--label-column") if options.with_labels else None,
        None if options.where is None else key(options.where[0], "split column"),
    )


def _column_key(source: Source, header, column, flag: str, keyed: bool) -> int | str:
    if header is None:
        return int(column) if str(column).isdigit() else column
    if header.count(column) > 1:
        raise DataError(f"{source.name}: {header.count(column)} columns are named {column!r}")
    if column in header:
        return column if keyed else header.index(column)
    if str(column).isdigit() and int(column) < len(header):
        return header[int(column)] if keyed else int(column)
    raise DataError(
        f"{source.name}: no column {column!r} for {flag}; {source.holder} columns: "
        + ", ".join(f"{i}={name!r}" for i, name in enumerate(header))
    )


def is_missing(value) -> bool:
    """No value: a key the record lacks, None, NaN, or pandas' NA/NaT (an empty cell)."""
    if value is MISSING or value is None:
        return True
    if isinstance(value, float):
        return value != value
    return type(value).__name__ in ("NAType", "NaTType")


def field_value(source: Source, record, key, number: int, flag: str):
    """The field ``key`` of ``record``; MISSING when a dict lacks it."""
    if isinstance(record, dict):
        if isinstance(key, int):
            raise DataError(
                f"{source.name}: {flag} {key} is a column number; JSONL rows need a key name"
            )
        value = record.get(key, MISSING)
        return MISSING if is_missing(value) else value
    if isinstance(key, str):
        raise DataError(
            f"{source.name}: {flag} {key!r} needs a header row; give a column number (0-based)"
        )
    if key >= len(record):
        raise DataError(
            f"{source.at(number)}: no field {key} for {flag}; the row has {len(record)} fields"
        )
    return record[key]


def as_text(value, source: Source, number: int, flag: str = "--text-column") -> str | None:
    """A field as a text; None when it is missing or blank."""
    if is_missing(value):
        return None
    if isinstance(value, (list, dict, tuple)):
        raise DataError(f"{source.at(number)}: {flag} holds {json_type(value)}, expected a string")
    if isinstance(value, (bytes, bytearray)):
        raise DataError(f"{source.at(number)}: {flag} holds bytes, expected a string")
    text = str(value)
    return text if text.strip() else None


@dataclass
class _Kept:
    """The rows kept so far and the ones left out, by reason."""

    texts: list[str] = field(default_factory=list)
    pairs: list[str | None] = field(default_factory=list)
    labels: list = field(default_factory=list)
    numbers: list[int] = field(default_factory=list)
    fields: list[dict] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)
    bad: list[int] = field(default_factory=list)  # rows with an empty text or a missing label
    seen: int = 0

    def drop(self, reason: str, number: int) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        if reason in BAD_ROW_REASONS:
            self.bad.append(number)


def collect(
    source: Source,
    records: Iterable[tuple[int, object]],
    keys: Keys,
    options: ReadOptions,
    *,
    header_line: bool = False,
    header: list[str] | None = None,
) -> Examples:
    """Check every ``(number, record)`` and gather the usable ones as ``Examples``.

    ``header_line`` says the source had a header line of its own (CSV/TSV), for the message about
    a file that holds nothing else; ``header`` names the fields of list records for
    ``options.keep_fields`` (numbered "0", "1", ... without one).
    """
    kept = _Kept()
    label_types: dict[str, tuple[int, object]] = {}  # "number"/"name" -> first (row, value)
    for number, record in records:
        if options.limit is not None and len(kept.texts) >= options.limit:
            break
        kept.seen += 1
        row = _check_record(source, record, number, keys, options, label_types)
        if isinstance(row, str):
            kept.drop(row, number)
        elif row is not None:
            kept.texts.append(row[0])
            kept.pairs.append(row[1])
            kept.labels.append(row[2])
            kept.numbers.append(number)
            if options.keep_fields:
                kept.fields.append(_as_fields(record, header))
    _check_bad_rows(source, kept, options)
    _check_usable(source, kept, header_line)
    with_labels = keys.label is not None
    return Examples(
        source.name,
        kept.texts,
        kept.pairs if keys.pair is not None else None,
        kept.labels if with_labels else None,
        kept.numbers,
        with_labels and options.label_kind == "single" and all(map(is_int_text, kept.labels)),
        kept.dropped,
        kept.fields if options.keep_fields else None,
    )


def _as_fields(record, header: list[str] | None) -> dict:
    """Every column of a record as a dict (list records by ``header``, else by number)."""
    if isinstance(record, dict):
        return dict(record)
    names = header or [str(i) for i in range(len(record))]
    return dict(zip(names, record))


def _check_record(
    source: Source, record, number: int, keys: Keys, options: ReadOptions, label_types: dict
):
    """(text, pair, label) of a usable record, a reason to drop it, or None when ``where``
    leaves it out."""
    if record is WRONG_WIDTH:
        return WRONG_WIDTH
    if keys.where is not None:
        value = field_value(source, record, keys.where, number, "split column")
        if value != options.where[1] and str(value) != options.where[1]:
            return None
    text = as_text(field_value(source, record, keys.text, number, "--text-column"), source, number)
    pair = None
    if keys.pair is not None:
        raw_pair = field_value(source, record, keys.pair, number, "--pair-column")
        pair = as_text(raw_pair, source, number, "--pair-column")
    label = None
    if keys.label is not None:
        raw = field_value(source, record, keys.label, number, "--label-column")
        label = parse_label(raw, options.label_kind, options.label_separator, source.name, number)
        if options.label_kind == "single" and label is not None:
            check_label_type(source.name, number, raw, label, label_types, source.unit)
            if label in options.drop_labels:
                return f"label {label!r}"
    if text is None or (keys.pair is not None and pair is None):
        return "empty text"
    if keys.label is not None and label is None:
        return "missing label"
    return text, pair, label


def _check_bad_rows(source: Source, kept: _Kept, options: ReadOptions) -> None:
    if not kept.bad or options.skip_bad_rows:
        return
    bad = kept.bad
    shown = ", ".join(map(str, bad[:5])) + (", ..." if len(bad) > 5 else "")
    what = "an empty text or a missing label" if options.with_labels else "an empty text"
    rows = "1 row" if len(bad) == 1 else f"{len(bad)} rows"
    unit = source.unit + ("s" if len(bad) > 1 else "")
    raise DataError(
        f"{source.name}: {rows} with {what} ({unit} {shown}); fix "
        f"{'them' if len(bad) > 1 else 'it'} or pass --skip-bad-rows"
    )


def _check_usable(source: Source, kept: _Kept, header_line: bool) -> None:
    if kept.texts:
        return
    if kept.seen == 0 and header_line:
        raise DataError(f"{source.name}: only a header line, no data rows")
    if kept.seen == 0:
        raise DataError(f"{source.name}: no data rows")
    detail = ""
    if kept.dropped:
        detail = f" ({Examples(source.name, [], dropped=kept.dropped).describe()})"
    raise DataError(f"{source.name}: no usable rows{detail}")
