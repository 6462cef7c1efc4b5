"""Predictions for a file or a text, and writing them as JSONL, CSV or TSV."""

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
from bertfit.errors import ConfigError
from bertfit.files import atomic_open
from bertfit.rundir import trained_columns
from bertfit.serve.run import Run, load


def predict(config: PredictConfig, run: Run | None = None) -> list[dict]:
    """Predictions for ``--text`` or every row of ``--input``; written to ``--output`` if given."""
    config.validate()
    if config.output:
        file_format(config.output)  # an unknown extension fails before the model is loaded
    run = run or load(config.run_dir, config.device, config.checkpoint)
    if config.text is not None:
        if run.is_pair and config.pair is None:
            raise ConfigError(
                f"{run.directory} was trained on text pairs: give the second text with --pair"
            )
        return run.predict(
            [config.text], None if config.pair is None else [config.pair], config.batch_size
        )
    columns = trained_columns(run.meta, config.text_column, config.pair_column, None)
    examples = read_examples(config.input, columns, with_labels=False, **file_options(config))
    bar = f"predicting {len(examples):,} rows" if show_progress(config.progress) else None
    logits = run.logits(examples.texts, examples.pairs, config.batch_size, bar)
    records = run.records(logits)
    if config.output:
        write_predictions(config.output, records, run.labels, run.meta.label_separator)
    return records


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
    """(header, rows) of the predictions as a table."""
    if records and "score" in records[0]:
        return ["score"], [[record["score"]] for record in records]
    first = "labels" if records and "labels" in records[0] else "label"
    rows = []
    for record in records:
        value = record[first]
        if first == "labels":
            value = separator.join(map(str, value))
        rows.append([value, *(record["probabilities"][label] for label in labels)])
    return [first, *(f"p_{label}" for label in labels)], rows
