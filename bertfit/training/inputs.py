"""What a run trains and is judged on: train, dev and test examples from files, rows in memory or a
named task, with the label names and a held-out dev split when none is given."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from bertfit.config.fields import show_progress
from bertfit.config.train import TrainConfig
from bertfit.data.checks import check_dev_split, check_label_kind
from bertfit.data.examples import Columns, Examples
from bertfit.data.labels import (
    MULTI,
    PAIRS,
    PROBLEMS,
    REGRESSION,
    SINGLE,
    check_known_labels,
    label_set,
    parse_label_names,
    rename_labels,
)
from bertfit.data.layout import file_options
from bertfit.data.memory import read_source
from bertfit.data.splits import stratified_split, stratify_keys
from bertfit.errors import ConfigError

log = logging.getLogger("bertfit")
Source = Any  # a path, or rows in memory (see data/memory.py)


@dataclass
class TrainingData:
    """What a run trains and is judged on: train, dev, an optional labelled test split."""

    train: Examples
    dev: Examples
    labels: list[str]
    problem: str
    test: Examples | None = None
    test_name: str | None = None
    task: str | None = None


def positive_pairs(examples: Examples, task_name: str) -> Examples:
    """The pairs of a labelled task that are positives for in-batch negatives: entailment (NLI)
    or paraphrase/duplicate (label 1), as SBERT trains on NLI."""
    from bertfit.data.tasks import get_task

    task = get_task(task_name)
    positive = next(
        (x for x in ("entailment", "ENTAILMENT", "1") if x in (task.labels or ())), None
    )
    if positive is None:
        raise ConfigError(
            f"--objective contrastive: task {task_name} has no positive-pair label; use cosine or softmax"
        )
    keep = [i for i, label in enumerate(examples.labels) if label == positive]
    log.info(
        f"contrastive: {len(keep)} of {len(examples)} {task_name} pairs are positives ({positive})"
    )
    return examples.subset(keep)


def read_training_data(
    config: TrainConfig, train: Source = None, dev: Source = None
) -> TrainingData:
    """Train, dev (and for tasks a labelled test split) and the label names.

    ``train``/``dev`` are rows in memory (a list of dicts, a pandas DataFrame or a Hugging Face
    ``Dataset``) given instead of ``config.train``/``config.dev``. Dev is a file or rows, a
    task's dev split, or a seeded, stratified ``--dev-fraction`` of train when neither is there.
    """
    problem = config.problem()
    if config.task:
        data = _read_task(config, problem)
    else:
        read = lambda source, name, limit=None: read_source(  # noqa: E731
            source,
            Columns(config.text_column, config.pair_column, config.label_column),
            name=name,
            with_labels=problem != PAIRS,
            limit=limit,
            label_kind=PROBLEMS[problem].label_kind,
            label_separator=config.label_separator,
            **file_options(config),
        )
        train_examples = read(config.train if train is None else train, "train", config.train_limit)
        dev_source = config.dev if dev is None else dev
        dev_examples = None if dev_source is None else read(dev_source, "dev")
        data = TrainingData(train_examples, dev_examples, [], problem)
        if problem == SINGLE and not config.as_classes:
            label_flag = f"--label-column {config.label_column!r}"
            check_label_kind(data.train, config.label_separator, label_flag)
    labels = _label_names(data.train, problem, config)
    if config.metric == "f1" and len(labels) != 2:
        raise ConfigError(f"--metric f1 needs two labels; the training data has {len(labels)}")
    if data.dev is None:
        fraction = config.dev_fraction or 0.1
        keys = (
            [""] * len(data.train)
            if problem == PAIRS
            else stratify_keys(data.train.labels, PROBLEMS[problem].label_kind)
        )
        train_idx, dev_idx = stratified_split(keys, fraction, data_seed(config))
        check_dev_split(data.train, len(dev_idx), fraction)
        data.train, data.dev = data.train.subset(train_idx), data.train.subset(dev_idx)
    names = label_names_of(config)
    if names:
        labels = _apply_label_names(data, labels, names, config)
    for other in (data.dev, data.test):
        if other is not None and problem in (SINGLE, MULTI):
            check_known_labels(other, labels)
    data.labels = labels
    if config.objective == "contrastive" and config.task:
        data.train, data.dev = (
            positive_pairs(data.train, config.task),
            positive_pairs(data.dev, config.task),
        )
    return data


def label_names_of(config: TrainConfig) -> dict[str, str] | None:
    """--label-names, else a task's own names for its label codes."""
    if config.label_names:
        return parse_label_names(config.label_names)
    if config.task:
        from bertfit.data.tasks import get_task

        return get_task(config.task).label_names
    return None


def _apply_label_names(data: TrainingData, labels: list[str], names: dict, config) -> list[str]:
    """Rename the labels of every split; the label order stays that of the codes."""
    unknown = sorted(set(names) - set(labels))
    if unknown:
        raise ConfigError(
            f"--label-names names {', '.join(map(repr, unknown))}, which the training data does "
            f"not have (its labels: {', '.join(labels)})"
        )
    unnamed = [label for label in labels if label not in names]
    if config.label_names and unnamed:
        raise ConfigError(f"--label-names gives no name for {', '.join(map(repr, unnamed))}")
    data.train, data.dev = rename_labels(data.train, names), rename_labels(data.dev, names)
    if data.test is not None:
        data.test = rename_labels(data.test, names)
    return [names.get(label, label) for label in labels]


def _label_names(train: Examples, problem: str, config: TrainConfig) -> list[str]:
    if problem == REGRESSION:
        return ["score"]
    if problem == PAIRS:
        return []
    if config.task:
        from bertfit.data.tasks import get_task

        return list(get_task(config.task).labels)
    labels = label_set(train.labels, train.label_is_int)
    if problem == SINGLE and len(labels) < 2:
        raise ConfigError(
            f"{train.path}: only one label ({labels[0]!r}) in the training data; need at least two"
        )
    if problem == MULTI and not labels:
        raise ConfigError(f"{train.path}: no labels at all in the training data")
    return labels


def _read_task(config: TrainConfig, problem: str) -> TrainingData:
    from bertfit.data.corpus import locate, read_split, split_file
    from bertfit.data.tasks import get_task

    task = get_task(config.task)
    wanted = {REGRESSION: "similarity scores", SINGLE: "class labels"}.get(problem)
    if config.objective and wanted and task.problem != problem:
        raise ConfigError(
            f"--objective {config.objective} needs {wanted}; task {task.name} has "
            + ("scores" if task.problem == REGRESSION else "class labels")
        )
    root = locate(
        task, config.data_dir, config.cache_dir, config.download, show_progress(config.progress)
    )
    seed = data_seed(config)
    read = lambda split, limit=None: read_split(task, root, split, limit=limit, seed=seed)  # noqa: E731
    train_examples = read(config.train_split, config.train_limit)
    eval_split = config.eval_split or task.dev_split
    if eval_split is not None and not task.labelled(eval_split):
        split_file(task, root, eval_split)  # an unknown split name is reported as such
        raise ConfigError(
            f"task {task.name}: the {eval_split} split has no labels; pick another --eval-split"
        )
    have_eval = eval_split is not None and split_file(task, root, eval_split) is not None
    dev = None
    if config.dev_fraction is None and have_eval:
        dev, test_name = read(eval_split), task.test_split
    elif config.dev_fraction is None:
        why = "has no dev split" if eval_split is None else f"has no {eval_split} split in {root}"
        log.info(f"{task.name} {why}: holding out 10% of train as dev (set --dev-fraction)")
        test_name = task.test_split
    else:  # dev comes out of train, so a labelled dev split becomes the test
        test_name = eval_split if have_eval else task.test_split
    used = {task.split_name(config.train_split)}  # a split trained or judged on is no test
    if dev is not None:
        used.add(task.split_name(eval_split))
    if test_name is not None and task.split_name(test_name) in used:
        test_name = None
    test = None
    if test_name is not None and task.labelled(test_name):
        if split_file(task, root, test_name) is not None:
            test = read(test_name)
        else:
            log.info(f"{task.name}: no {test_name} split in {root}; reporting dev metrics only")
    return TrainingData(
        train_examples, dev, [], problem, test, test_name if test else None, task.name
    )


def data_seed(config: TrainConfig) -> int:
    """The seed that picks rows: --split-seed, else --seed."""
    return config.seed if config.split_seed is None else config.split_seed
