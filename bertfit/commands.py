"""What each CLI command does, as plain functions over the typed configs (the API calls them too)."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

from .config import EvaluateConfig, PredictConfig, QuickstartConfig, TrainConfig
from .data import Columns, check_known_labels, file_format, read_examples
from .errors import ConfigError
from .evaluation import classification_metrics
from .files import atomic_open
from .predict import Run, compute_logits, load, softmax
from .runtime import pick_precision

log = logging.getLogger("bertfit")
SAMPLES = Path(__file__).parent / "samples"


def _columns(run: Run, text: str | None, pair: str | None, label: str | None) -> Columns:
    trained = run.meta["columns"]
    return Columns(text or trained["text"], pair or trained["pair"], label or trained["label"])


def evaluate(config: EvaluateConfig, run: Run | None = None) -> dict:
    """Metrics of a run on a labelled file (see ``classification_metrics`` for the keys)."""
    config.validate()
    run = run or load(config.run_dir, config.device)
    columns = _columns(run, config.text_column, config.pair_column, config.label_column)
    examples = read_examples(config.data, columns)
    check_known_labels(examples, run.labels)
    logits = compute_logits(
        run.model,
        run.pack(examples.texts, examples.pairs),
        run.tokenizer.pad_token_id,
        config.batch_size,
        run.device,
        pick_precision("auto", run.device),
    )
    index = {label: i for i, label in enumerate(run.labels)}
    return classification_metrics(
        [index[x] for x in examples.labels], logits.argmax(-1), run.labels
    )


def predict(config: PredictConfig, run: Run | None = None) -> list[dict]:
    """Predictions for ``--text`` or every row of ``--input``; written to ``--output`` if given."""
    config.validate()
    run = run or load(config.run_dir, config.device)
    if config.text is not None:
        if run.is_pair and config.pair is None:
            raise ConfigError(
                f"{run.directory} was trained on text pairs: give the second text with --pair"
            )
        return run.predict(
            [config.text], None if config.pair is None else [config.pair], config.batch_size
        )
    columns = _columns(run, config.text_column, config.pair_column, None)
    examples = read_examples(config.input, columns, with_labels=False)
    logits = run.logits(examples.texts, examples.pairs, config.batch_size)
    records = [run.record(row) for row in softmax(logits)]
    if config.output:
        write_predictions(config.output, records, run.labels)
    return records


def write_predictions(path: str, records: list[dict], labels: list[str]) -> None:
    """JSONL, CSV or TSV by extension, one record per input row, written atomically."""
    fmt = file_format(path)
    with atomic_open(path, "w", encoding="utf-8", newline="") as handle:
        if fmt == "jsonl":
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            return
        writer = csv.writer(handle, delimiter="\t" if fmt == "tsv" else ",", lineterminator="\n")
        writer.writerow(["label", *(f"p_{label}" for label in labels)])
        for record in records:
            writer.writerow(
                [record["label"], *(record["probabilities"][label] for label in labels)]
            )


QUICKSTART_SENTENCES = [
    "a gorgeous, witty, seductive movie.",
    "the plot is a tired mess and the jokes never land.",
]


def quickstart(config: QuickstartConfig) -> dict:
    """The README's main job: fine-tune the default encoder on the bundled SST-2 sample."""
    from .training import train

    config.validate()
    run = train(
        TrainConfig(
            train=str(SAMPLES / "sst2_train.tsv.gz"),
            dev=str(SAMPLES / "sst2_dev.tsv"),
            text_column="sentence",
            label_column="label",
            output=config.output,
            epochs=config.epochs,
            train_limit=config.train_limit,
            overwrite=config.overwrite,
            progress=config.progress,
        )
    )
    metrics = evaluate(
        EvaluateConfig(run_dir=config.output, data=str(SAMPLES / "sst2_dev.tsv")), run
    )
    predictions = run.predict(QUICKSTART_SENTENCES)
    return {
        "run_dir": config.output,
        "metrics": metrics,
        "predictions": list(zip(QUICKSTART_SENTENCES, predictions)),
    }
