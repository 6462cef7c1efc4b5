"""Predictions for a file or a text, with the input's columns carried along, written as JSONL,
CSV, TSV or Parquet."""

from __future__ import annotations

import csv
import gzip
import io
import json

from bertfit.config.commands import (
    PredictConfig,
)
from bertfit.config.fields import show_progress
from bertfit.data.layout import file_options
from bertfit.data.parquet import write_parquet
from bertfit.data.readers import file_format, read_examples
from bertfit.errors import ConfigError, DataError
from bertfit.files import atomic_open
from bertfit.inference.run import Run, load
from bertfit.rundir import trained_columns


def predict(config: PredictConfig, run: Run | None = None) -> list[dict]:
    """Predictions for ``--text`` or every row of ``--input``; written to ``--output`` if given."""
    config.validate()
    if config.output:
        file_format(config.output)  # an unknown extension fails before the model is loaded
    run = run or load(config.run_dir, config.device, config.checkpoint, config.backend)
    if config.text is not None:
        if run.is_pair and config.pair is None:
            raise ConfigError(
                f"{run.directory} was trained on text pairs: give the second text with --pair"
            )
        return run.predict(
            [config.text], None if config.pair is None else [config.pair], config.batch_size
        )
    columns = trained_columns(run.meta, config.text_column, config.pair_column, None)
    keep = config.keep_columns.strip()
    examples = read_examples(
        config.input, columns, with_labels=False, keep_fields=keep != "none", **file_options(config)
    )
    bar = f"predicting {len(examples):,} rows" if show_progress(config.progress) else None
    logits = run.logits(examples.texts, examples.pairs, config.batch_size, bar)
    records = run.records(logits)
    if examples.fields is not None:
        records = with_input_columns(records, examples.fields, keep, config.input)
    if config.output:
        write_predictions(config.output, records, run.labels, run.meta.label_separator)
    return records


PREDICTION_KEYS = ("label", "labels", "score", "probabilities")


def with_input_columns(records: list[dict], fields: list[dict], keep: str, path) -> list[dict]:
    """Each prediction after its input row's columns (``keep``: all, or a comma-separated
    list); an input column named like a prediction field is kept as ``input_<name>``."""
    names = list(fields[0]) if fields else []
    if keep != "all":
        wanted = [name.strip() for name in keep.split(",") if name.strip()]
        missing = [name for name in wanted if name not in names]
        if missing:
            raise DataError(
                f"{path}: no column {missing[0]!r} for --keep-columns; the file has columns: "
                + ", ".join(repr(name) for name in names)
            )
        names = wanted
    rename = {name: f"input_{name}" if name in PREDICTION_KEYS else name for name in names}
    return [
        {**{rename[name]: row.get(name) for name in names}, **record}
        for row, record in zip(fields, records)
    ]


def write_predictions(
    path: str, records: list[dict], labels: list[str], separator: str = "|"
) -> None:
    """JSONL, CSV, TSV (``.gz`` compressed too) or Parquet by extension, one record per input
    row, written atomically.

    Table columns: ``label`` (or ``score``, or ``labels`` joined by ``separator``) and one
    ``p_<label>`` column per label.
    """
    fmt = file_format(path)
    if fmt == "parquet":
        header, rows = prediction_table(records, labels, separator)
        write_parquet(path, {name: [row[i] for row in rows] for i, name in enumerate(header)})
        return
    if fmt == "jsonl":
        text = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    else:
        buffer = io.StringIO()
        delimiter = "\t" if fmt in ("tsv", "txt") else ","  # a .txt output stays TSV
        writer = csv.writer(buffer, delimiter=delimiter, lineterminator="\n")
        header, rows = prediction_table(records, labels, separator)
        writer.writerow(header)
        writer.writerows(rows)
        text = buffer.getvalue()
    data = text.encode("utf-8")
    if str(path).lower().endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def prediction_table(records: list[dict], labels: list[str], separator: str = "|"):
    """(header, rows) of the predictions as a table: the input columns carried along, then
    ``label`` (or ``labels``, or ``score``) and one ``p_<label>`` column per label."""
    carried = [k for k in records[0] if k not in PREDICTION_KEYS] if records else []
    inputs = [[_cell(record[k]) for k in carried] for record in records]
    if records and "score" in records[0]:
        rows = [[*row, record["score"]] for row, record in zip(inputs, records)]
        return [*carried, "score"], rows
    first = "labels" if records and "labels" in records[0] else "label"
    rows = []
    for row, record in zip(inputs, records):
        value = record[first]
        if first == "labels":
            value = separator.join(map(str, value))
        rows.append([*row, value, *(record["probabilities"][label] for label in labels)])
    return [*carried, first, *(f"p_{label}" for label in labels)], rows


def _cell(value):
    """A carried input value as a table cell: lists and objects as JSON text."""
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (list, dict)) else value
