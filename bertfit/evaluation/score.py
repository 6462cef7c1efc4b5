"""Scoring a run on labelled data: a file, rows in memory or a task split; classifiers by their
metrics with intervals, bi-encoders by the cosine of the two texts against the gold score."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bertfit.config.commands import (
    EvaluateConfig,
)
from bertfit.config.fields import show_progress
from bertfit.data.examples import Columns, Examples
from bertfit.data.labels import (
    MULTI,
    PROBLEMS,
    REGRESSION,
    check_known_labels,
    label_targets,
    rename_labels,
)
from bertfit.data.layout import file_options
from bertfit.data.memory import read_source
from bertfit.errors import ConfigError
from bertfit.evaluation.metrics import bootstrap_intervals, with_intervals
from bertfit.inference.run import Run, load
from bertfit.rundir import CHECKPOINT_PREFIX, is_embedding_run, trained_columns
from bertfit.training.checkpoint import find_checkpoint


def evaluate(config: EvaluateConfig, run: Run | None = None, data: Any = None) -> dict:
    """Metrics of a run on a labelled file, rows in memory (``data``: a list of dicts, a pandas
    DataFrame or a Hugging Face ``Dataset``) or a task's split (keys as in ``score_outputs``).

    A bi-encoder (``--objective cosine``, or a run trained as one) is scored by the cosine of
    the two texts' embeddings against the gold score: Spearman and Pearson.
    """
    config.validate(in_memory=data is not None)
    bi_encoder = is_embedding_run(config.run_dir) or _is_bi_encoder_checkpoint(config.run_dir)
    if run is None and (config.objective == "cosine" or bi_encoder):
        return evaluate_similarity(config, data)
    run = run or load(config.run_dir, config.device, config.checkpoint, config.backend)
    examples = evaluation_examples(config, run, data)
    if run.problem != REGRESSION:
        check_known_labels(examples, run.labels)
    logits = run.logits(
        examples.texts,
        examples.pairs,
        config.batch_size,
        f"scoring {len(examples):,} examples" if show_progress(config.progress) else None,
    )
    return with_intervals(
        run.problem,
        label_targets(examples.labels, run.labels, PROBLEMS[run.problem].label_kind),
        logits,
        run.labels,
        run.thresholds if run.problem == MULTI else None,
    )


def _is_bi_encoder_checkpoint(path: str) -> bool:
    folder = Path(path)
    return folder.name.startswith(CHECKPOINT_PREFIX) and is_embedding_run(folder.parent)


def evaluate_similarity(config: EvaluateConfig, data: Any = None) -> dict:
    """Spearman/Pearson of embedding cosines against gold scores, for any encoder or bi-encoder."""
    from bertfit.evaluation.metrics import pearson, spearman
    from bertfit.inference.embed import load_embedder

    model = config.run_dir
    if config.checkpoint is not None:  # a checkpoint folder is a sentence-transformers model
        if config.backend == "onnx":
            raise ConfigError("--backend onnx runs the exported final model; drop --checkpoint")
        model = str(find_checkpoint(config.run_dir, config.checkpoint).path)
    embedder = load_embedder(model, config.device, backend=config.backend)
    if config.task is not None:
        from bertfit.data.corpus import locate, read_split
        from bertfit.data.tasks import get_task

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
        examples = read_source(
            config.data if data is None else data,
            columns,
            name="data",
            label_kind="score",
            **file_options(config),
        )
    cosines = embedder.similarity(examples.texts, examples.pairs, config.batch_size)
    gold = np.asarray(examples.labels, dtype=float)

    def score(i):
        return {"spearman": spearman(gold[i], cosines[i]), "pearson": pearson(gold[i], cosines[i])}

    return {**score(slice(None)), "n": len(gold), "ci": bootstrap_intervals(score, len(gold))}


def evaluation_examples(config: EvaluateConfig, run: Run, data: Any = None) -> Examples:
    """The labelled examples ``config`` names (a file, rows in memory, or a task's split) in
    ``run``'s columns, with label codes renamed as the run names them."""
    examples = _labelled_examples(config, run, data)
    names = run.meta.label_names
    return rename_labels(examples, names) if names else examples


def _labelled_examples(config: EvaluateConfig, run: Run, data: Any) -> Examples:
    if config.task is None:
        columns = trained_columns(
            run.meta, config.text_column, config.pair_column, config.label_column
        )
        return read_source(
            config.data if data is None else data,
            columns,
            name="data",
            label_kind=PROBLEMS[run.problem].label_kind,
            label_separator=run.meta.label_separator,
            **file_options(config),
        )
    from bertfit.data.corpus import locate, read_split
    from bertfit.data.tasks import get_task

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
