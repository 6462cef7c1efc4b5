"""What each CLI command does, as plain functions over the typed configs (the API calls them too)."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np

from bertfit.config.commands import (
    EmbedConfig,
    EvaluateConfig,
    PredictConfig,
    QuickstartConfig,
    SearchConfig,
    SimilarityConfig,
    TrainConfig,
)
from bertfit.data.examples import Columns, Examples
from bertfit.data.labels import MULTI, REGRESSION, check_known_labels, label_targets
from bertfit.data.readers import file_format, read_examples
from bertfit.errors import ConfigError
from bertfit.evaluation.metrics import bootstrap_intervals, with_intervals
from bertfit.files import atomic_open
from bertfit.runtime import pick_precision
from bertfit.serve.run import Run, compute_logits, load

log = logging.getLogger("bertfit")
SAMPLES = Path(__file__).parents[1] / "samples"


def trained_columns(run: Run, text: str | None, pair: str | None, label: str | None) -> Columns:
    """The columns given, else those the run was trained with."""
    trained = run.meta["columns"]
    return Columns(text or trained["text"], pair or trained["pair"], label or trained["label"])


def evaluate(config: EvaluateConfig, run: Run | None = None) -> dict:
    """Metrics of a run on a labelled file or a task's split (keys as in ``score_outputs``).

    A bi-encoder (``--objective cosine``, or a run trained as one) is scored by the cosine of
    the two texts' embeddings against the gold score: Spearman and Pearson.
    """
    config.validate()
    if run is None and (config.objective == "cosine" or _is_embedding_run(config.run_dir)):
        return evaluate_similarity(config)
    run = run or load(config.run_dir, config.device, config.checkpoint)
    examples = evaluation_examples(config, run)
    if run.problem != REGRESSION:
        check_known_labels(examples, run.labels)
    logits = compute_logits(
        run.model,
        run.pack(examples.texts, examples.pairs),
        run.tokenizer.pad_token_id,
        config.batch_size,
        run.device,
        pick_precision("auto", run.device),
    )
    kind = {REGRESSION: "score", MULTI: "multi"}.get(run.problem, "single")
    return with_intervals(
        run.problem,
        label_targets(examples.labels, run.labels, kind),
        logits,
        run.labels,
        run.thresholds if run.problem == MULTI else None,
    )


def _is_embedding_run(run_dir: str) -> bool:
    meta = Path(run_dir) / "bertfit.json"
    try:
        return json.loads(meta.read_text(encoding="utf-8")).get("problem") == "embedding"
    except (OSError, json.JSONDecodeError):
        return False


def evaluate_similarity(config: EvaluateConfig) -> dict:
    """Spearman/Pearson of embedding cosines against gold scores, for any encoder or bi-encoder."""
    from bertfit.evaluation.metrics import pearson, spearman
    from bertfit.serve.embed import load_embedder

    embedder = load_embedder(config.run_dir, config.device)
    if config.task is not None:
        from bertfit.data.tasks import get_task, locate, read_split

        task = get_task(config.task)
        if task.pair is None or task.problem != REGRESSION:
            raise ConfigError(
                f"task {task.name} has no similarity scores; --objective cosine needs pairs with "
                "a score (stsb, sick-r)"
            )
        root = locate(task, config.data_dir, config.cache_dir, config.download, progress=False)
        examples = read_split(task, root, config.split or task.dev_split or "test")
    else:
        if config.pair_column is None:
            raise ConfigError(
                "--objective cosine on a file needs --pair-column (and --text-column)"
            )
        columns = Columns(
            config.text_column or "text", config.pair_column, config.label_column or "label"
        )
        examples = read_examples(config.data, columns, label_kind="score")
    cosines = embedder.similarity(examples.texts, examples.pairs, config.batch_size)
    gold = np.asarray(examples.labels, dtype=float)

    def score(i):
        return {"spearman": spearman(gold[i], cosines[i]), "pearson": pearson(gold[i], cosines[i])}

    return {**score(slice(None)), "n": len(gold), "ci": bootstrap_intervals(score, len(gold))}


def evaluation_examples(config: EvaluateConfig, run: Run) -> Examples:
    """The labelled examples ``config`` names (a file, or a task's split) in ``run``'s columns."""
    kind = {REGRESSION: "score", MULTI: "multi"}.get(run.problem, "single")
    if config.task is None:
        columns = trained_columns(run, config.text_column, config.pair_column, config.label_column)
        return read_examples(
            config.data,
            columns,
            label_kind=kind,
            label_separator=run.meta.get("label_separator", "|"),
        )
    from bertfit.data.tasks import get_task, locate, read_split

    task = get_task(config.task)
    if task.problem != run.problem:
        raise ConfigError(
            f"task {task.name} is {task.problem.replace('_', ' ')} but {run.directory} was "
            f"trained for {run.problem.replace('_', ' ')}"
        )
    if (task.pair is None) == run.is_pair:
        raise ConfigError(
            f"task {task.name} has {'single texts' if task.pair is None else 'text pairs'} "
            f"but {run.directory} was trained on {'pairs' if run.is_pair else 'single texts'}"
        )
    split = config.split or task.dev_split or task.test_split
    root = locate(task, config.data_dir, config.cache_dir, config.download, progress=False)
    return read_split(task, root, split)


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
    columns = trained_columns(run, config.text_column, config.pair_column, None)
    examples = read_examples(config.input, columns, with_labels=False)
    logits = run.logits(examples.texts, examples.pairs, config.batch_size)
    records = run.records(logits)
    if config.output:
        write_predictions(config.output, records, run.labels, run.meta.get("label_separator", "|"))
    return records


def write_predictions(
    path: str, records: list[dict], labels: list[str], separator: str = "|"
) -> None:
    """JSONL, CSV or TSV by extension, one record per input row, written atomically.

    CSV/TSV columns: ``label`` (or ``score``, or ``labels`` joined by ``separator``) and one
    ``p_<label>`` column per label.
    """
    fmt = file_format(path)
    with atomic_open(path, "w", encoding="utf-8", newline="") as handle:
        if fmt == "jsonl":
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            return
        writer = csv.writer(handle, delimiter="\t" if fmt == "tsv" else ",", lineterminator="\n")
        if records and "score" in records[0]:
            writer.writerow(["score"])
            writer.writerows([record["score"]] for record in records)
            return
        first = "labels" if records and "labels" in records[0] else "label"
        writer.writerow([first, *(f"p_{label}" for label in labels)])
        for record in records:
            value = record[first]
            if first == "labels":
                value = separator.join(map(str, value))
            writer.writerow([value, *(record["probabilities"][label] for label in labels)])


QUICKSTART_SENTENCES = [
    "a gorgeous, witty, seductive movie.",
    "the plot is a tired mess and the jokes never land.",
]


def quickstart(config: QuickstartConfig) -> dict:
    """The README's main job: fine-tune the default encoder on the bundled SST-2 sample."""
    from bertfit.training.run import train

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


def _embedder(spec: str, device: str, max_length: int | None):
    from bertfit.serve.embed import load_embedder

    embedder = load_embedder(spec, device)
    if max_length is not None:
        embedder.pooling.max_length = max_length
    return embedder


def embed(config: EmbedConfig) -> np.ndarray:
    """Vectors for every text of ``--input``, written to ``--output`` (.npy or .parquet)."""
    from bertfit.serve.embed import read_sentences, save_vectors

    config.validate()
    if not str(config.output).lower().endswith((".npy", ".parquet")):
        raise ConfigError(f"--output {config.output}: use .npy or .parquet")
    texts = read_sentences(config.input, config.text_column)
    embedder = _embedder(config.model, config.device, config.max_length)
    vectors = embedder.encode(texts, config.batch_size, config.normalize, config.progress)
    save_vectors(config.output, vectors)
    return vectors


def similarity(config: SimilarityConfig) -> float:
    """Cosine similarity of ``--text`` and ``--pair``."""
    config.validate()
    embedder = _embedder(config.model, config.device, config.max_length)
    return float(embedder.similarity([config.text], [config.pair], config.batch_size)[0])


def search(config: SearchConfig) -> list[dict]:
    """The ``--top-k`` corpus texts nearest each query, by cosine; JSONL to ``--output`` if given."""
    from bertfit.serve.embed import cached_corpus_vectors, read_sentences, top_k

    config.validate()
    corpus = read_sentences(config.corpus, config.text_column)
    queries = (
        [config.query]
        if config.query is not None
        else read_sentences(config.queries, config.text_column)
    )
    embedder = _embedder(config.model, config.device, config.max_length)
    vectors = cached_corpus_vectors(
        embedder, Path(config.corpus), corpus, config.batch_size, config.progress, config.cache
    )
    scores, indices = top_k(
        embedder.encode(queries, config.batch_size, normalize=True), vectors, config.top_k
    )
    records = [
        {
            "query": query,
            "hits": [
                {"rank": r + 1, "index": int(i), "score": round(float(s), 6), "text": corpus[i]}
                for r, (s, i) in enumerate(zip(row_scores, row_index))
            ],
        }
        for query, row_scores, row_index in zip(queries, scores, indices)
    ]
    if config.output:
        with atomic_open(config.output, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    return records
