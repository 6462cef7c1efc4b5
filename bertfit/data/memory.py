"""Rows in memory: a list of dicts, a pandas DataFrame, a ``datasets.Dataset`` or a pyarrow Table.

They are checked exactly as files are (``bertfit.data.records``). Rows are numbered from 1 in
their order (a DataFrame's index is not used), and messages name them the way file lines are
named, after what holds them: ``<train DataFrame>:3: --text-column holds an array, expected a
string``; ``Examples.path`` is that name (``<train rows>``, ``<dev Dataset>``). pandas,
datasets and pyarrow are never imported here: the objects are recognised by what they offer.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from bertfit.data.examples import Columns, Examples
from bertfit.data.readers import read_examples
from bertfit.data.records import ReadOptions, Source, collect, column_keys
from bertfit.errors import ConfigError, DataError

PLAIN = (str, int, float, bool, type(None), list, dict)
HOLDERS = {
    "rows": "the rows have",
    "DataFrame": "the DataFrame has",
    "Dataset": "the Dataset has",
    "Table": "the Table has",
}


def read_rows(rows, columns: Columns, *, name: str = "train", **options: Any) -> Examples:
    """``Examples`` from rows in memory, validated as ``read_examples`` validates a file.

    ``rows`` is a list of dicts (column -> value), a pandas DataFrame, a Hugging Face
    ``datasets.Dataset`` or a pyarrow Table; ``name`` ("train", "dev", "input") names them in
    messages. Integer labels (a numpy int64 column, a ``ClassLabel`` feature) become "0", "1", ...
    with ``label_is_int`` set; NaN or None in a text column counts as an empty text. The other
    arguments are those of ``read_examples``.
    Example: ``read_rows([{"text": "fine", "label": 1}, ...], Columns("text", None, "label"))``.
    """
    options = ReadOptions(**options)
    kind, header, records_for = _adapter(rows, name)
    source = Source(f"<{name} {kind}>", unit="row", holder=HOLDERS[kind])
    keys = column_keys(source, header, columns, options, keyed=True)
    wanted = list(header or keys.names()) if options.keep_fields else keys.names()
    return collect(source, records_for(wanted), keys, options)


def read_source(source, columns: Columns, *, name: str = "train", **options: Any) -> Examples:
    """``read_examples`` for a path (str or PathLike), ``read_rows`` for rows in memory.

    ``name`` names rows in memory in messages; a file is named by its path. ``options`` are the
    keyword arguments of ``read_examples`` (with_labels, limit, label_kind, ...). Anything else
    is a ConfigError naming its type.
    Example: ``read_source(frame, Columns("sentence", None, "label"), name="dev")``.
    """
    if isinstance(source, (str, os.PathLike)):
        return read_examples(source, columns, **options)
    return read_rows(source, columns, name=name, **options)


Adapter = tuple[str, list[str] | None, Callable[[list[str]], Iterator[tuple[int, dict]]]]


def _adapter(rows, name: str) -> Adapter:
    """(kind, column names, records of the wanted columns) for each kind of rows."""
    if isinstance(rows, (list, tuple)):
        return "rows", _dict_columns(rows, name), lambda wanted: _numbered(rows)
    column_names = getattr(rows, "column_names", None)
    if isinstance(column_names, dict):  # a DatasetDict: one Dataset per split
        raise ConfigError(
            f"{name} data: a DatasetDict with the splits {', '.join(column_names)}; pass one "
            "split, e.g. data['train']"
        )
    if hasattr(rows, "to_dict") and hasattr(rows, "columns") and hasattr(rows, "iloc"):
        return "DataFrame", [str(c) for c in rows.columns], lambda wanted: _frame(rows, wanted)
    if isinstance(column_names, list) and hasattr(rows, "features"):
        return "Dataset", list(column_names), lambda wanted: _dataset(rows, wanted)
    if isinstance(column_names, list) and hasattr(rows, "to_batches"):
        return "Table", list(column_names), lambda wanted: _table(rows, wanted)
    raise ConfigError(
        f"{name} data: expected a file path, a list of dicts, a pandas DataFrame, a "
        f"datasets.Dataset or a pyarrow Table; got {_type_name(rows)}"
    )


def _type_name(value) -> str:
    kind = type(value)
    return kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__name__}"


def _dict_columns(rows, name: str) -> list[str] | None:
    """Every key that some row has, in the order they first appear (None without rows); a row
    that is not a dict is an error naming it."""
    columns: dict[str, None] = {}
    for number, row in enumerate(rows, 1):
        if not isinstance(row, Mapping):
            raise DataError(
                f"<{name} rows>:{number}: expected a dict (column -> value) per row, "
                f"found {_type_name(row)}"
            )
        columns.update(dict.fromkeys(map(str, row)))
    return list(columns) if rows else None


def _plain(value):
    """numpy scalars and arrays (and tensors) as the Python values they hold."""
    if isinstance(value, PLAIN):
        return value
    tolist = getattr(value, "tolist", None)
    return tolist() if callable(tolist) else value


def _numbered(rows) -> Iterator[tuple[int, dict]]:
    for number, row in enumerate(rows, 1):
        yield number, {str(key): _plain(value) for key, value in row.items()}


def _frame(frame, wanted: list[str]) -> Iterator[tuple[int, dict]]:
    by_name = {str(c): c for c in frame.columns}
    selected = frame[[by_name[w] for w in wanted]]
    return _numbered(selected.to_dict(orient="records"))


def _dataset(dataset, wanted: list[str]) -> Iterator[tuple[int, dict]]:
    plain = dataset.with_format(None).select_columns(wanted)  # as Python values, not tensors
    return _numbered(plain)


def _table(table, wanted: list[str]) -> Iterator[tuple[int, dict]]:
    number = 0
    for batch in table.select(wanted).to_batches():
        for record in batch.to_pylist():
            number += 1
            yield number, record


def is_text_list(texts) -> bool:
    """A sequence of strings (list, tuple, numpy array, pandas Series), not rows with columns."""
    if (
        isinstance(texts, (str, dict))
        or hasattr(texts, "columns")
        or hasattr(texts, "column_names")
    ):
        return False
    return hasattr(texts, "__len__") and all(isinstance(t, str) for t in texts)


def require_texts(texts: list[str], pairs: list[str] | None = None) -> None:
    """Every text given directly (not from a file) must hold some text, as in training data."""
    for what, values in (("text", texts), ("pair text", pairs or [])):
        for i, value in enumerate(values):
            if not isinstance(value, str) or not value.strip():
                number = f" {i + 1} of {len(values)}" if len(values) > 1 else ""
                raise DataError(
                    f"{what}{number} is empty; every input needs some text (as in training)"
                )
