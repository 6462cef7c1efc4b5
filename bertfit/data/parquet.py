"""Parquet files: rows become ``(row number, dict)`` records, checked as JSON Lines records are.

pyarrow is optional (``pip install 'bertfit[parquet]'``) and imported only to read a file.
Rows are numbered from 1 across the file's row groups (and across the shards of a split read
together); messages name them like lines: ``train.parquet:3: ...``. Column names come from
the schema, so a missing column lists the columns there are, as for a CSV header.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

from bertfit.data.examples import Columns, Examples
from bertfit.data.records import ReadOptions, Source, collect, column_keys
from bertfit.errors import DataError
from bertfit.files import save_file_atomic

BATCH_ROWS = 4096  # rows converted to Python at a time: bounded memory on large files


def _parquet_module(path):
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(
            f"{path}: reading Parquet needs pyarrow: pip install 'bertfit[parquet]'"
        ) from None
    return pq


def open_parquet(path: str | os.PathLike):
    """A ``pyarrow.parquet.ParquetFile``; a DataError when pyarrow is missing or the file is
    not Parquet."""
    pq = _parquet_module(path)
    try:
        return pq.ParquetFile(path)
    except Exception as err:  # ArrowInvalid, OSError: pyarrow has no narrower common type
        reason = " ".join(str(err).split()) or type(err).__name__
        raise DataError(f"{path}: not a readable Parquet file ({reason})") from None


def parquet_records(
    path: str | os.PathLike, columns: list[str] | None = None, first: int = 1
) -> tuple[list[str], Iterator[tuple[int, dict]]]:
    """(column names, records): each record is (row number, dict of the ``columns`` wanted,
    all by default), rows numbered from ``first``."""
    file = open_parquet(path)
    names = list(file.schema_arrow.names)
    return names, _rows(file, path, columns, first)


def _rows(file, path, columns: list[str] | None, first: int) -> Iterator[tuple[int, dict]]:
    number = first - 1
    try:
        for batch in file.iter_batches(batch_size=BATCH_ROWS, columns=columns):
            for record in batch.to_pylist():
                number += 1
                yield number, record
    except Exception as err:  # a damaged page or an unsupported type, found while reading
        reason = " ".join(str(err).split()) or type(err).__name__
        raise DataError(f"{path}:{number + 1}: cannot read the row ({reason})") from None


def read_parquet(
    paths: str | os.PathLike | list[Path], columns: Columns, options: ReadOptions
) -> Examples:
    """``Examples`` from a Parquet file, or from the shards of one split read as one file.

    Shards must share their column names; rows are numbered on across them and messages name
    the first shard's folder. Only the columns wanted are read.
    """
    shards = [Path(paths)] if isinstance(paths, (str, os.PathLike)) else [Path(p) for p in paths]
    name = str(shards[0]) if len(shards) == 1 else str(shards[0].parent)
    source = Source(name, unit="row")
    header = list(open_parquet(shards[0]).schema_arrow.names)
    keys = column_keys(source, header, columns, options, keyed=True)
    wanted = header if options.keep_fields else keys.names()
    return collect(source, _shard_records(shards, header, wanted), keys, options)


def _shard_records(shards: list[Path], header: list[str], wanted: list[str]) -> Iterator:
    last = 0
    for shard in shards:
        names, records = parquet_records(shard, wanted, first=last + 1)
        if names != header:
            raise DataError(
                f"{shard}: columns {', '.join(names)} differ from {shards[0].name}'s "
                f"({', '.join(header)}); the shards of one split must have the same columns"
            )
        for last, record in records:  # noqa: B007 -- ``last`` carries on into the next shard
            yield last, record


def class_label_names(path: str | os.PathLike, column: str) -> list[str] | None:
    """The names of a Hugging Face ``ClassLabel`` column, from the schema metadata ``datasets``
    writes (``{"info": {"features": {column: {"_type": "ClassLabel", "names": [...]}}}}``);
    None when the file does not say."""
    metadata = open_parquet(path).schema_arrow.metadata or {}
    try:
        info = json.loads(metadata.get(b"huggingface", b"{}"))
        feature = info.get("info", {}).get("features", {}).get(column, {})
    except (ValueError, AttributeError):
        return None
    if not isinstance(feature, dict) or feature.get("_type") != "ClassLabel":
        return None
    names = feature.get("names")
    return [str(n) for n in names] if isinstance(names, list) else None


def write_parquet(path: str | os.PathLike, columns: dict[str, list]) -> None:
    """Write ``columns`` (name -> values, one per row) as a Parquet file, atomically."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(
            f"{path}: writing Parquet needs pyarrow: pip install 'bertfit[parquet]'"
        ) from None
    table = pa.table(columns)
    save_file_atomic(lambda tmp: pq.write_table(table, tmp), path)
