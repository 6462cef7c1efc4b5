"""Fine-tuning: read the data, pack it, build the model, run the loop, keep the best checkpoint.

``fit()`` is the loop, readable top to bottom: forward, loss, backward, clip, step, schedule,
log, evaluate, save.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import logging
import math
import random
import re
import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from bertfit import __version__
from bertfit.config.commands import DEFAULT_MODEL, TrainConfig
from bertfit.data.examples import Columns, Examples
from bertfit.data.labels import METRICS as PROBLEM_METRICS
from bertfit.data.labels import (
    MULTI,
    REGRESSION,
    SINGLE,
    check_known_labels,
    label_set,
    label_targets,
)
from bertfit.data.packing import Packed, collate, length_grouped_batches, pack_cached
from bertfit.data.readers import read_examples
from bertfit.data.splits import stratified_split, stratify_keys
from bertfit.errors import ConfigError, Interrupted, TrainingError
from bertfit.evaluation.metrics import (
    headline,
    score_outputs,
    sigmoid,
    tune_thresholds,
    with_intervals,
)
from bertfit.files import append_jsonl, write_json, write_text
from bertfit.models.classifier import (
    build_classifier,
    encoder_layers,
    freeze,
    init_regression_bias,
    load_tokenizer,
    save_classifier,
    use_fast_dropout,
)
from bertfit.models.encoders import DEFAULT_NAME, Encoder, resolve_encoder
from bertfit.models.fastbert import training_forward
from bertfit.report.card import write_model_card
from bertfit.runtime import (
    autocast,
    deterministic_algorithms,
    pick_device,
    pick_precision,
    set_threads,
)
from bertfit.serve.run import RESULTS, RUN_CONFIG, Run, compute_logits, load
from bertfit.training.checkpoint import (
    Checkpoint,
    StopSignals,
    last_checkpoint,
    load_training_state,
    prune_checkpoints,
    remove_stale_temporaries,
    restore_best_model,
    restore_rng,
    save_checkpoint,
)

log = logging.getLogger("bertfit")
METRICS = "metrics.jsonl"
STEPS = "steps.jsonl"  # loss and learning rate every few optimizer steps, for the report
DEV_PREDICTIONS = "dev_predictions.jsonl"
DEFAULT_MAX_LENGTH = 128


@dataclass
class Split:
    """One side of the data, packed, with its targets (label ids, scores or 0/1 label rows)."""

    examples: Examples
    packed: Packed
    label_ids: np.ndarray


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


PAIRS = "pairs"  # the contrastive objective: text/positive pairs without labels
LABEL_KIND = {SINGLE: "single", REGRESSION: "score", MULTI: "multi", PAIRS: "multi"}
LOSSES = {
    SINGLE: lambda logits, y: F.cross_entropy(logits, y),
    REGRESSION: lambda logits, y: F.mse_loss(logits.squeeze(-1), y),
    MULTI: lambda logits, y: F.binary_cross_entropy_with_logits(logits, y),
}


def problem_of(config: TrainConfig) -> str:
    """single-label, regression or multi-label: from the task, else from the flags."""
    if config.objective is not None:
        return {"cosine": REGRESSION, "softmax": SINGLE, "contrastive": PAIRS}[config.objective]
    if config.task:
        from bertfit.data.tasks import get_task

        return get_task(config.task).problem
    return REGRESSION if config.regression else MULTI if config.multi_label else SINGLE


def choose_metric(config: TrainConfig, problem: str, labels: list[str]) -> str:
    """--metric, checked against the problem, else the task's first metric or the problem's."""
    allowed = PROBLEM_METRICS[problem]
    if config.metric is None:
        if config.task:
            from bertfit.data.tasks import get_task

            return get_task(config.task).metrics[0]
        return allowed[0]
    if config.metric not in allowed:
        raise ConfigError(
            f"--metric {config.metric} does not fit this problem; choose one of {', '.join(allowed)}"
        )
    if config.metric == "f1" and len(labels) != 2:
        raise ConfigError(f"--metric f1 needs two labels; the training data has {len(labels)}")
    return config.metric


def encoder_defaults(config: TrainConfig, encoder: Encoder) -> TrainConfig:
    """Fill the options left unset with what measurement chose for this encoder.

    The default encoder (all-MiniLM-L6-v2) was tuned on SST-2 (benchmarks/); the d2l book trains
    with lr 1e-4; BERT-base-sized encoders take the usual 3e-5 with all weights trained.
    """
    if encoder.name == DEFAULT_NAME:
        chosen = {"lr": 1.5e-4, "layer_lr_decay": 0.9, "train_word_embeddings": False}
    elif encoder.kind == "d2l":
        chosen = {"lr": 1e-4, "layer_lr_decay": 1.0, "train_word_embeddings": True}
    else:
        chosen = {"lr": 3e-5, "layer_lr_decay": 1.0, "train_word_embeddings": True}
    unset = {name: value for name, value in chosen.items() if getattr(config, name) is None}
    return dataclasses.replace(config, **unset)


def train(config: TrainConfig) -> Run:
    """Fine-tune ``config.model`` on ``config.train`` and return the finished run (with
    ``--objective``, the trained bi-encoder as an ``Embedder``).

    Example: ``bertfit.train(TrainConfig(train="train.tsv", output="runs/x", text_column="sentence"))``.
    With ``resume="runs/x"`` (or ``"auto"``) a run continues from its last complete checkpoint.
    """
    _ensure_logging()
    config, checkpoint = resolve_resume(config)
    config.validate()
    output = Path(config.output)
    if checkpoint is FINISHED:
        log.info(f"{output} is a finished run; nothing to resume")
        return load_finished(output)
    if config.tensorboard:
        _tensorboard_writer_class()  # a missing package stops the run before anything is written
    if checkpoint is None:
        _check_output_dir(output, config.overwrite)
    set_threads(config.threads)
    device = pick_device(config.device)
    dtype = pick_precision(config.precision, device)
    encoder = resolve_encoder(config.model)
    tokenizer = load_tokenizer(encoder)
    if config.max_length is None:
        limit = getattr(tokenizer, "max_positions", None) or DEFAULT_MAX_LENGTH
        config = dataclasses.replace(config, max_length=min(DEFAULT_MAX_LENGTH, limit))
    data = read_training_data(config)
    trainer = _train_bi_encoder if config.objective is not None else _train_classifier
    with deterministic_algorithms(config.deterministic):
        return trainer(config, encoder, tokenizer, data, device, dtype, output, checkpoint)


def load_finished(output: Path):
    """A finished run: a classifier ``Run``, or the bi-encoder's ``Embedder``."""
    if json.loads((output / RUN_CONFIG).read_text(encoding="utf-8")).get("problem") == "embedding":
        from bertfit.serve.embed import load_embedder

        return load_embedder(str(output))
    return load(output)


def _train_classifier(
    config: TrainConfig,
    encoder: Encoder,
    tokenizer,
    data: TrainingData,
    device: torch.device,
    dtype: torch.dtype | None,
    output: Path,
    checkpoint: Checkpoint | None,
) -> Run:
    train_examples, dev_examples, labels, problem = data.train, data.dev, data.labels, data.problem
    config = dataclasses.replace(config, metric=choose_metric(config, problem, labels))
    train_set = _prepare(tokenizer, train_examples, labels, problem, config)
    dev_set = _prepare(tokenizer, dev_examples, labels, problem, config)
    config = encoder_defaults(config, encoder)
    fingerprint = data_fingerprint(
        train_set.packed.ids, train_set.packed.offsets, train_set.label_ids,
        dev_set.packed.ids, dev_set.packed.offsets, dev_set.label_ids,
    )  # fmt: skip
    _check_same_data(checkpoint, fingerprint)
    _seed_everything(config.seed)
    # the model first: weights that do not fit the config fail before anything is logged
    model = build_classifier(encoder, labels, config.dropout, seed=config.seed, problem=problem)
    what = "a score" if problem == REGRESSION else f"{len(labels)} labels"
    log.info(
        f"{len(train_examples)} training and {len(dev_examples)} dev examples, {what}; "
        f"encoder {encoder.name}; device {device}, {_precision_name(dtype)}, lr {config.lr:g}"
    )
    if problem == REGRESSION:
        init_regression_bias(model, float(train_set.label_ids.mean()))
    freeze(model, config.freeze_embeddings, config.train_last_layers, config.train_word_embeddings)
    if checkpoint is not None:
        load_weights(model, checkpoint.path, encoder.kind)
    else:
        _start_run_dir(output, config, encoder, data)
    if device.type == "cpu":
        use_fast_dropout(model)
    model.to(device)
    trainee = Trainee(
        model,
        train_set.packed.lengths,
        classifier_batch_loss(model, train_set, problem, tokenizer.pad_token_id, device, dtype),
        classifier_evaluation(model, dev_set, labels, problem, config, tokenizer.pad_token_id, device, dtype),
        lambda folder: save_classifier(model, tokenizer, folder),
    )  # fmt: skip
    summary = run_loop(trainee, config, device, dtype, output, checkpoint, fingerprint)
    if problem == MULTI:
        cut = summary.pop("kept") or [0.5] * len(labels)
        summary["thresholds"] = {label: float(t) for label, t in zip(labels, cut)}
    summary.pop("kept", None)
    summary.update(
        labels=labels,
        problem=problem,
        train_examples=len(train_examples),
        dev_examples=len(dev_examples),
        device=str(device),
        precision=_precision_name(dtype),
    )
    score_best = lambda split: _score_saved_model(  # noqa: E731
        output,
        encoder.kind,
        split,
        labels,
        problem,
        summary.get("thresholds"),
        device,
        dtype,
        tokenizer.pad_token_id,
    )
    best_dev = score_best(dev_set)
    summary["dev_ci"] = best_dev.pop("ci")
    if problem == SINGLE:
        _write_dev_predictions(output, dev_examples, best_dev.pop("probabilities"), labels)
    if data.test is not None:
        test = score_best(_prepare(tokenizer, data.test, labels, problem, config))
        summary["test_ci"] = test.pop("ci")
        test.pop("probabilities", None)
        summary["test"], summary["test_split"] = test, data.test_name
        log.info(
            f"{data.test_name} ({len(data.test)} examples): {config.metric} "
            f"{summary['test'][config.metric]:.4f}"
        )
    write_model_card(output, summary)
    write_json(output / RESULTS, summary)  # its presence marks a finished run
    from bertfit.report.page import build_report

    build_report(output)
    log.info(
        f"done: best dev {config.metric} {summary['dev'][config.metric]:.4f} (epoch {summary['best_epoch']}); run in {output}"
    )
    return load(output, device=str(device))


@dataclass
class Trainee:
    """What the loop needs from the thing it trains; the loop itself is the same for all.

    ``batch_loss(indices)`` gives the loss of those training examples and, for classifiers,
    how many were predicted right (else None); ``evaluate()`` gives the dev metrics and what to
    keep with the best model (tuned thresholds, or None); ``write_model(folder)`` saves it.
    """

    model: nn.Module
    lengths: np.ndarray
    batch_loss: Callable[[list[int]], tuple[torch.Tensor, int | None]]
    evaluate: Callable[[], tuple[dict, list[float] | None]]
    write_model: Callable[[Path], None]


def classifier_batch_loss(model, split: Split, problem: str, pad_id: int, device, dtype):
    forward, loss_of = training_forward(model), LOSSES[problem]

    def batch_loss(indices: list[int]) -> tuple[torch.Tensor, int | None]:
        batch = {
            k: v.to(device, non_blocking=True)
            for k, v in collate(split.packed, indices, pad_id, split.label_ids).items()
        }
        targets = batch.pop("labels")
        with autocast(device, dtype):
            logits = forward(**batch)
        correct = int((logits.argmax(-1) == targets).sum()) if problem == SINGLE else None
        return loss_of(logits.float(), targets), correct

    return batch_loss


def classifier_evaluation(model, split: Split, labels, problem, config, pad_id, device, dtype):
    def evaluate() -> tuple[dict, list[float] | None]:
        logits = compute_logits(
            model, split.packed, pad_id, max(64, config.batch_size), device, dtype
        )
        thresholds = None
        if problem == MULTI and config.tune_thresholds:
            thresholds = [float(t) for t in tune_thresholds(split.label_ids, sigmoid(logits))]
        return score_outputs(problem, split.label_ids, logits, labels, thresholds), thresholds

    return evaluate


def run_loop(
    trainee: Trainee,
    config: TrainConfig,
    device: torch.device,
    dtype: torch.dtype | None,
    output: Path,
    checkpoint: Checkpoint | None,
    fingerprint: str,
) -> dict:
    """``fit`` with its guards: signals stop it at a checkpoint; a full disk and out-of-memory
    become one line of advice; the last complete checkpoint stays valid in every case."""
    steps = total_steps(len(trainee.lengths), config)
    optimizer = make_optimizer(
        trainee.model, config.lr, config.weight_decay, device, config.layer_lr_decay
    )
    scheduler = linear_schedule(optimizer, round(config.warmup_ratio * steps), steps)
    if checkpoint is not None:
        log.info(f"resuming from {checkpoint.path} (step {checkpoint.step})")
    try:
        with StopSignals(_announce_stop) as stop:
            return fit(
                trainee, config, optimizer, scheduler, device, dtype, output,
                resume=checkpoint, stop=stop, fingerprint=fingerprint,
            )  # fmt: skip
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise TrainingError(_disk_full_message(output, err)) from None
        raise
    except RuntimeError as err:  # torch.OutOfMemoryError is a RuntimeError too
        if not _is_out_of_memory(err):
            raise
        raise TrainingError(_out_of_memory_advice(config, device, output)) from None


def total_steps(examples: int, config: TrainConfig) -> int:
    """Optimizer steps of the whole run (the schedule's length)."""
    batches = math.ceil(examples / config.batch_size)
    return math.ceil(batches / config.grad_accum) * config.epochs


def _check_same_data(checkpoint: Checkpoint | None, fingerprint: str) -> None:
    if checkpoint is not None and checkpoint.state.get("data") != fingerprint:
        raise ConfigError(
            f"{checkpoint.path}: the training or dev data changed since this checkpoint was "
            "saved; a resumed run needs the same data (start a new run with another --output)"
        )


FINISHED = object()  # resolve_resume's answer for a run that has nothing left to do
# options that may differ when a run resumes: where things are and how they are shown, not what
# is trained
RESUMABLE_CHANGES = {
    "output",
    "resume",
    "overwrite",
    "progress",
    "threads",
    "device",
    "cache_dir",
    "data_dir",
    "download",
    "save_steps",
    "save_total_limit",
    "tensorboard",
    "skip_nonfinite",
}


def resolve_resume(config: TrainConfig):
    """The config to run and the checkpoint to start from (None: a fresh run; FINISHED).

    ``--resume RUN`` takes the run's own settings, so ``bertfit train --resume runs/x`` is enough;
    options given as well must agree with them, except the ones in ``RESUMABLE_CHANGES``.
    """
    if config.resume is None:
        return config, None
    if config.overwrite:
        raise ConfigError("--resume continues a run and --overwrite replaces it; give one")
    auto = config.resume == "auto"
    if auto and config.output is None:
        raise ConfigError("--resume auto resumes --output; give --output DIR")
    run_dir = Path(config.output if auto else config.resume)
    if (
        not auto
        and config.output is not None
        and Path(config.output).resolve() != run_dir.resolve()
    ):
        raise ConfigError(f"--resume continues {run_dir} in place; drop --output {config.output}")
    if auto and (not run_dir.is_dir() or not any(run_dir.iterdir())):
        return dataclasses.replace(config, resume=None), None
    meta_path = run_dir / RUN_CONFIG
    if not meta_path.is_file():
        where = "--output" if auto else "--resume"
        raise ConfigError(f"{where} {run_dir}: not a bertfit run directory (no {RUN_CONFIG})")
    try:
        saved = json.loads(meta_path.read_text(encoding="utf-8"))["config"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"{meta_path}: cannot be read ({err})") from None
    merged = _merge_saved_config(config, saved, meta_path)
    merged = dataclasses.replace(merged, output=str(run_dir))
    if (run_dir / RESULTS).is_file():
        return merged, FINISHED
    checkpoint = last_checkpoint(run_dir)
    remove_stale_temporaries(run_dir)
    if checkpoint is None:
        log.info(f"{run_dir} has no complete checkpoint yet; starting the run again")
        return dataclasses.replace(merged, resume=None, overwrite=True), None
    return merged, checkpoint


def _merge_saved_config(config: TrainConfig, saved: dict, source: Path) -> TrainConfig:
    values, conflicts = {}, []
    for field in dataclasses.fields(TrainConfig):
        given, default = getattr(config, field.name), field.default
        stored = saved.get(field.name, default)
        if field.name in RESUMABLE_CHANGES:
            values[field.name] = given if given != default else stored
            continue
        values[field.name] = stored
        if given != default and given != stored:
            flag = "--" + field.name.replace("_", "-")
            conflicts.append(f"{flag} {given} (the run has {stored})")
    if conflicts:
        raise ConfigError(
            f"{source}: a resumed run keeps its settings, but the command changes "
            f"{'; '.join(conflicts)}; drop those options or start a new run with another --output"
        )
    values["resume"] = config.resume
    return TrainConfig(**values)


def data_fingerprint(*arrays: np.ndarray) -> str:
    """A digest of the packed inputs and targets: a resumed run must see the same data."""
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:32]


def load_weights(model: nn.Module, checkpoint: Path, kind: str) -> None:
    """Copy a checkpoint's weights into ``model`` (built the same way), exactly."""
    from bertfit.models.classifier import load_classifier

    saved, _ = load_classifier(checkpoint, kind)
    model.load_state_dict(saved.state_dict())


def _announce_stop(number: int) -> None:
    name = signal.Signals(number).name
    log.warning(
        f"{name}: stopping after this step to save a checkpoint "
        "(press Ctrl-C again to quit at once)"
    )


def _is_out_of_memory(err: BaseException) -> bool:
    text = str(err)
    return isinstance(err, torch.OutOfMemoryError) or (
        "out of memory" in text or "can't allocate memory" in text.lower()
    )


def _out_of_memory_advice(config: TrainConfig, device: torch.device, output: Path) -> str:
    half = max(1, config.batch_size // 2)
    shorter = max(8, config.max_length // 2)
    last = last_checkpoint(output)
    kept = f"; the last checkpoint is {last.path}" if last else ""
    return (
        f"out of memory on {device} with --batch-size {config.batch_size} and --max-length "
        f"{config.max_length}: try --batch-size {half} --grad-accum {config.grad_accum * 2} "
        f"(the same effective batch), or --max-length {shorter}, or --precision bf16{kept}"
    )


def _disk_full_message(output: Path, err: OSError) -> str:
    last = last_checkpoint(output)
    kept = (
        f"the last complete checkpoint {last.path} is intact; free some space and resume with: "
        f"bertfit train --resume {output}"
        if last
        else "no checkpoint was complete yet"
    )
    where = f" writing {err.filename}" if err.filename else ""
    return f"no space left on the device{where}; {kept}"


def _train_bi_encoder(
    config: TrainConfig,
    encoder: Encoder,
    tokenizer,
    data: TrainingData,
    device,
    dtype,
    output: Path,
    checkpoint: Checkpoint | None,
):
    """Fine-tune ``encoder`` as a bi-encoder with ``config.objective``; a sentence-transformers run."""
    from bertfit.models.biencoder import (
        bi_encoder_batch_loss,
        dev_metrics,
        load_bi_encoder,
        load_bi_encoder_weights,
        save_bi_encoder,
        scale_scores,
    )
    from bertfit.serve.embed import Pooling, load_embedder, read_pooling

    if encoder.kind != "hf":
        raise ConfigError("--objective needs a Hugging Face-format encoder")
    if data.train.pairs is None:
        raise ConfigError("--objective needs text pairs: give --pair-column")
    if config.objective == "contrastive" and data.task:
        data.train, data.dev = (
            _positive_pairs(data.train, data.task),
            _positive_pairs(data.dev, data.task),
        )
    # SBERT's fine-tuning rate: the encoder is often already a sentence embedder, and the
    # classification defaults (1.5e-4 for the default encoder) undo its training
    metric = {"cosine": "spearman", "contrastive": "recall_at_1", "softmax": "accuracy"}
    config = dataclasses.replace(
        config,
        lr=config.lr or 2e-5,
        layer_lr_decay=config.layer_lr_decay or 1.0,
        metric=metric[config.objective],
    )
    config = encoder_defaults(config, encoder)
    limit = read_pooling(encoder.path).max_length
    pooling = Pooling(config.pooling, config.normalize, min(config.max_length, limit))

    def side(examples: Examples) -> dict:
        pack = lambda texts: pack_cached(  # noqa: E731
            tokenizer, texts, None, pooling.max_length, config.truncation, config.cache_dir
        )
        out = {"a": pack(examples.texts), "b": pack(examples.pairs)}
        _, ids = np.unique(
            np.asarray(examples.texts + examples.pairs, dtype=object), return_inverse=True
        )
        out["a_ids"], out["b_ids"] = ids[: len(examples)], ids[len(examples) :]
        if config.objective == "cosine":
            out["y"] = scale_scores(np.asarray(examples.labels, dtype=np.float32), low, high)
        elif config.objective == "softmax":
            out["y"] = label_targets(examples.labels, data.labels, "single")
        return out

    if config.objective == "cosine":
        scores = np.asarray(data.train.labels, dtype=np.float32)
        inside = scores.min() >= 0 and scores.max() <= 1
        low, high = (0.0, 1.0) if inside else (float(scores.min()), float(scores.max()))
    train_side, dev_side = side(data.train), side(data.dev)
    fingerprint = data_fingerprint(
        *(train_side[k].ids for k in "ab"),
        *(dev_side[k].ids for k in "ab"),
        *(np.asarray(split.get("y", [])) for split in (train_side, dev_side)),
    )
    _check_same_data(checkpoint, fingerprint)
    _seed_everything(config.seed)
    num_labels = len(data.labels) if config.objective == "softmax" else 0
    model = load_bi_encoder(encoder.path, pooling, num_labels, config.seed)
    freeze(model, config.freeze_embeddings, config.train_last_layers, config.train_word_embeddings)
    if checkpoint is not None:
        load_bi_encoder_weights(model, checkpoint.path)
    else:
        _start_run_dir(output, config, encoder, data)
        meta_path = output / RUN_CONFIG
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        meta.update(problem="embedding", objective=config.objective, pooling=pooling.__dict__)
        if config.objective == "cosine":
            meta["score_range"] = [low, high]
        write_json(meta_path, meta)
    if device.type == "cpu":
        use_fast_dropout(model)
    model.to(device)
    log.info(
        f"bi-encoder, {config.objective} objective: {len(data.train)} training and "
        f"{len(data.dev)} dev pairs; encoder {encoder.name}; device {device}, lr {config.lr:g}"
    )
    pad_id = tokenizer.pad_token_id
    trainee = Trainee(
        model,
        np.maximum(train_side["a"].lengths, train_side["b"].lengths),
        bi_encoder_batch_loss(model, train_side, config, pad_id, device, dtype),
        lambda: (dev_metrics(model, dev_side, config.objective, data.labels, pad_id, device, dtype), None),
        lambda folder: save_bi_encoder(model, tokenizer, folder),
    )  # fmt: skip
    summary = run_loop(trainee, config, device, dtype, output, checkpoint, fingerprint)
    summary.pop("kept", None)
    summary.update(
        problem="embedding",
        objective=config.objective,
        train_examples=len(data.train),
        dev_examples=len(data.dev),
    )
    write_model_card(output, summary)
    write_json(output / RESULTS, summary)
    log.info(
        f"done: best dev {summary['metric']} {summary['dev'][summary['metric']]:.4f}; run in {output}"
    )
    return load_embedder(str(output), str(device))


def _positive_pairs(examples: Examples, task_name: str) -> Examples:
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


def read_training_data(config: TrainConfig) -> TrainingData:
    """Train, dev (and for tasks a labelled test split) and the label names.

    Dev is a file (``--dev``), a task's dev split, or a seeded, stratified ``--dev-fraction``
    of train when neither is there.
    """
    problem = problem_of(config)
    if config.task:
        data = _read_task(config, problem)
    else:
        kind = LABEL_KIND[problem]
        read = lambda path, limit=None: read_examples(  # noqa: E731
            path,
            Columns(config.text_column, config.pair_column, config.label_column),
            with_labels=problem != PAIRS,
            limit=limit,
            skip_bad_rows=config.skip_bad_rows,
            label_kind=kind,
            label_separator=config.label_separator,
        )
        train_examples = read(config.train, config.train_limit)
        dev_examples = read(config.dev) if config.dev else None
        data = TrainingData(train_examples, dev_examples, [], problem)
    labels = _label_names(data.train, problem, config)
    if data.dev is None:
        fraction = config.dev_fraction or 0.1
        keys = (
            [""] * len(data.train)
            if problem == PAIRS
            else stratify_keys(data.train.labels, LABEL_KIND[problem])
        )
        train_idx, dev_idx = stratified_split(keys, fraction, config.seed)
        data.train, data.dev = data.train.subset(train_idx), data.train.subset(dev_idx)
    for other in (data.dev, data.test):
        if other is not None and problem in (SINGLE, MULTI):
            check_known_labels(other, labels)
    data.labels = labels
    return data


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
    from bertfit.data.tasks import get_task, locate, read_split, split_file

    task = get_task(config.task)
    wanted = {REGRESSION: "similarity scores", SINGLE: "class labels"}.get(problem)
    if config.objective and wanted and task.problem != problem:
        raise ConfigError(
            f"--objective {config.objective} needs {wanted}; task {task.name} has "
            + ("scores" if task.problem == REGRESSION else "class labels")
        )
    root = locate(task, config.data_dir, config.cache_dir, config.download, config.progress)
    read = lambda split, limit=None: read_split(task, root, split, limit=limit, seed=config.seed)  # noqa: E731
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
    if test_name in (config.train_split, eval_split if dev is not None else None):
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


def _prepare(
    tokenizer, examples: Examples, labels: list[str], problem: str, config: TrainConfig
) -> Split:
    packed = pack_cached(
        tokenizer,
        examples.texts,
        examples.pairs,
        config.max_length,
        config.truncation,
        config.cache_dir,
    )
    return Split(examples, packed, label_targets(examples.labels, labels, LABEL_KIND[problem]))


def _write_dev_predictions(output: Path, examples: Examples, probabilities, labels) -> None:
    """One line per dev example: text, gold label, prediction, probabilities (for the report)."""
    from bertfit.files import atomic_open

    with atomic_open(output / DEV_PREDICTIONS, "w", encoding="utf-8") as handle:
        for i, row in enumerate(probabilities):
            record = {
                "text": examples.texts[i],
                "pair": None if examples.pairs is None else examples.pairs[i],
                "label": examples.labels[i],
                "predicted": labels[int(row.argmax())],
                "probabilities": [round(float(p), 6) for p in row],
            }
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def _score_saved_model(
    output: Path, kind: str, split: Split, labels, problem, thresholds, device, dtype, pad_id
) -> dict:
    """Metrics of the best checkpoint (as saved, not the last weights in memory) on ``split``."""
    from bertfit.models.classifier import load_classifier

    model, _ = load_classifier(output, kind)
    logits = compute_logits(model.to(device), split.packed, pad_id, 64, device, dtype)
    cut = None if thresholds is None else [thresholds[label] for label in labels]
    metrics = with_intervals(problem, split.label_ids, logits, labels, cut)
    if problem == SINGLE:
        from bertfit.serve.run import softmax

        metrics["probabilities"] = softmax(logits)
    return metrics


def fit(
    trainee: Trainee,
    config: TrainConfig,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    device: torch.device,
    dtype: torch.dtype | None,
    output: Path,
    resume: Checkpoint | None = None,
    stop: StopSignals | None = None,
    fingerprint: str | None = None,
) -> dict:
    """The training loop. Returns the summary that becomes ``results.json``.

    The best model goes to ``output``. A checkpoint is saved every ``config.save_steps``
    optimizer steps, at each epoch end and when ``stop`` reports a signal; with ``resume`` the
    loop continues from one exactly: weights (loaded by the caller), optimizer, schedule, random
    generators, batch order and position, counters and history.
    """
    model = trainee.model
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    state = new_trainer_state(fingerprint)
    order: list[list[int]] = []  # the current epoch's batches, kept so a checkpoint records them
    if resume is not None:
        order = load_training_state(resume.path, optimizer, scheduler, scaler)
        state = resume.state
        _rewrite_history(output, state)
        restore_best_model(resume.path, output)
    log_every = max(1, total_steps(len(trainee.lengths), config) // 200)
    board = None
    if config.tensorboard:  # a resumed run drops the events logged after its checkpoint
        board = open_tensorboard(output, state["step"] + 1 if resume is not None else None)
    pending_steps: list[dict] = []
    accuracy = False  # whether batch_loss counts right predictions (classifiers)

    def evaluate_and_keep(epoch: int, epoch_stats: dict) -> None:
        dev, kept = trainee.evaluate()
        record = {
            "epoch": epoch,
            "step": state["step"],
            **epoch_stats,
            "dev": headline(dev),
            "time": round(time.time(), 3),
        }
        append_jsonl(output / METRICS, record)
        state["metrics"].append(record)
        if board is not None:
            for name, value in {
                **epoch_stats,
                **{f"dev/{k}": v for k, v in record["dev"].items()},
            }.items():
                board.add_scalar(name if "/" in name else f"train/{name}", value, state["step"])
        score = state["last_dev"] = dev[config.metric]
        state["evaluated_step"] = state["step"]
        if _improves(score, state["best"]):
            state.update(
                best=score,
                best_epoch=epoch,
                best_step=state["step"],
                bad_evals=0,
                dev=dev,
                kept=kept,
            )
            trainee.write_model(output)
        else:
            state["bad_evals"] += 1

    def flush_steps() -> None:
        for record in pending_steps:
            append_jsonl(output / STEPS, record)
            state["steps"].append(record)
            if board is not None:
                for name in ("loss", "lr", "examples_per_second"):
                    board.add_scalar(f"step/{name}", record[name], record["step"])
        pending_steps.clear()

    def checkpoint() -> Path:
        state["epoch_seconds"] = time.perf_counter() - started
        flush_steps()
        evaluated = state.get("evaluated_step") == state["step"]
        state["dev_score"] = state["last_dev"] if evaluated else None
        path = save_checkpoint(
            output, state["step"], trainee.write_model, optimizer, scheduler, scaler, state, order
        )
        prune_checkpoints(output, config.save_total_limit)
        return path

    model.train()
    if resume is not None:
        restore_rng(resume.path)  # last, so nothing above draws from the restored generators
    for epoch in range(state["epoch"], config.epochs + 1):
        if state["batch"] == 0:
            order = [
                [int(i) for i in batch]
                for batch in length_grouped_batches(
                    trainee.lengths, config.batch_size, config.seed + epoch, config.length_groups
                )
            ]
        bar = tqdm(
            total=len(trainee.lengths),
            initial=state["seen"],
            desc=f"epoch {epoch}/{config.epochs}",
            unit="ex",
            disable=not config.progress,
            file=sys.stderr,
            mininterval=0.5,
            leave=False,
        )
        started = time.perf_counter() - state["epoch_seconds"]
        for i in range(state["batch"], len(order)):
            indices = order[i]
            loss, correct = trainee.batch_loss(indices)
            accuracy = correct is not None
            loss_value = float(
                loss.item()
            )  # .item() syncs; once per batch is cheap next to the step
            finite = math.isfinite(loss_value)
            if finite:
                scaler.scale(loss / config.grad_accum).backward()
            else:
                _non_finite(config, state, epoch, i, f"the loss is {loss_value}", output)
            boundary = (i + 1) % config.grad_accum == 0 or i + 1 == len(order)
            if boundary:
                if not optimizer_step(model, optimizer, scaler, config.max_grad_norm):
                    _non_finite(config, state, epoch, i, "a gradient is not finite", output)
                scheduler.step()
                state["step"] += 1
                if state["step"] % log_every == 0:  # about 200 points per run for the report
                    pending_steps.append(
                        {
                            "step": state["step"],
                            "epoch": epoch,
                            "loss": round(loss_value, 5),
                            "lr": scheduler.get_last_lr()[-1],
                            "examples_per_second": round(
                                state["seen"] / (time.perf_counter() - started), 2
                            ),
                        }
                    )
            if finite:
                state["loss_sum"] += loss_value * len(indices)
                if correct is not None:
                    state["correct"] += correct
                state["seen"] += len(indices)
            state["batch"] = i + 1
            bar.update(len(indices))
            seen = max(state["seen"], 1)
            bar.set_postfix(
                loss=f"{state['loss_sum'] / seen:.4f}",
                ex_s=f"{seen / (time.perf_counter() - started):.0f}",
                refresh=False,
            )
            if not boundary:
                continue
            if config.eval_steps and state["step"] % config.eval_steps == 0:
                pause = time.perf_counter()
                evaluate_and_keep(epoch, _train_stats(state, accuracy))
                started += time.perf_counter() - pause  # evaluation time is not training time
                model.train()
            if i + 1 == len(order):
                continue  # the epoch end saves the checkpoint
            signalled = stop is not None and stop.requested
            if signalled or (config.save_steps and state["step"] % config.save_steps == 0):
                path = checkpoint()
                if signalled:
                    bar.close()
                    raise _interrupted(stop, state, path, output)
        bar.close()
        flush_steps()
        elapsed = time.perf_counter() - started
        state["train_seconds"] += elapsed
        state["train_seen"] += state["seen"]
        stats = _train_stats(state, accuracy)
        stats["examples_per_second"] = state["seen"] / elapsed if elapsed else 0.0
        evaluate_and_keep(epoch, stats)
        model.train()
        log.info(
            f"epoch {epoch}/{config.epochs}: loss {stats['train_loss']:.4f}, "
            + (f"train acc {stats['train_accuracy']:.4f}, " if "train_accuracy" in stats else "")
            + f"dev {config.metric} {state['last_dev']:.4f}, "
            f"{stats['examples_per_second']:.1f} examples/s"
        )
        stopping = (
            config.early_stopping_patience is not None
            and state["bad_evals"] >= config.early_stopping_patience
        )
        # the next epoch starts here: a checkpoint now resumes at its first batch
        state.update(
            epoch=config.epochs + 1 if stopping else epoch + 1,
            batch=0,
            loss_sum=0.0,
            correct=0,
            seen=0,
            epoch_seconds=0.0,
        )
        started = time.perf_counter()
        path = checkpoint()
        if stop is not None and stop.requested and state["epoch"] <= config.epochs:
            raise _interrupted(stop, state, path, output)
        if stopping:
            log.info(f"early stopping: no dev improvement in {state['bad_evals']} evaluations")
            break
    if board is not None:
        board.close()
    return {
        "version": __version__,
        "metric": config.metric,
        "best_epoch": state["best_epoch"],
        "best_step": state["best_step"],
        "steps": state["step"],
        "dev": state["dev"],
        "kept": state.get("kept"),
        "skipped_batches": state["skipped_batches"],
        "train_seconds": round(state["train_seconds"], 3),
        "train_examples_per_second": round(state["train_seen"] / state["train_seconds"], 2)
        if state["train_seconds"]
        else None,
    }


def _improves(score: float, best: float | None) -> bool:
    """The first evaluation always counts (so a model is saved); NaN never beats a number."""
    if best is None or math.isnan(best):
        return True
    return not math.isnan(score) and score > best


def new_trainer_state(fingerprint: str | None) -> dict:
    """Counters, best-so-far and history: what a checkpoint stores besides the tensors."""
    return {
        "data": fingerprint,
        "epoch": 1,
        "batch": 0,  # the next batch of this epoch's order
        "step": 0,
        "best": None,
        "best_epoch": 0,
        "best_step": 0,
        "bad_evals": 0,
        "dev": {},
        "kept": None,  # what the evaluation keeps with the best model: tuned thresholds
        "last_dev": None,
        "loss_sum": 0.0,
        "correct": 0,
        "seen": 0,
        "skipped_batches": 0,
        "epoch_seconds": 0.0,
        "train_seconds": 0.0,
        "train_seen": 0,
        "metrics": [],
        "steps": [],
    }


def _rewrite_history(output: Path, state: dict) -> None:
    """Cut metrics.jsonl and steps.jsonl back to what the checkpoint had seen."""
    for name, records in ((METRICS, state["metrics"]), (STEPS, state["steps"])):
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        write_text(output / name, text)


def _non_finite(config: TrainConfig, state: dict, epoch: int, batch: int, what: str, output):
    """Skip the batch with a warning (--skip-nonfinite) or stop, keeping the last checkpoint."""
    where = f"step {state['step'] + 1} (epoch {epoch}, batch {batch + 1})"
    if config.skip_nonfinite:
        state["skipped_batches"] += 1
        log.warning(f"{where}: {what}; batch skipped (--skip-nonfinite)")
        return
    last = last_checkpoint(output)
    kept = f"the last good checkpoint is {last.path}; " if last else ""
    raise TrainingError(
        f"{where}: {what}; stopped. {kept}lower --lr, or pass --skip-nonfinite to skip such "
        "batches" + (f" (bertfit train --resume {output} --skip-nonfinite)" if last else "")
    )


def _interrupted(stop: StopSignals, state: dict, path: Path, output: Path) -> Interrupted:
    name = signal.Signals(stop.requested).name
    return Interrupted(
        f"{name} at step {state['step']}: saved {path}; resume with: bertfit train --resume {output}",
        stop.exit_code,
    )


def _tensorboard_writer_class():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError(
            "--tensorboard needs the tensorboard package: pip install tensorboard"
        ) from None
    return SummaryWriter


def open_tensorboard(output: Path, purge_step: int | None = None):
    """A TensorBoard writer into ``output/tensorboard`` (the same scalars as the report)."""
    return _tensorboard_writer_class()(str(output / "tensorboard"), purge_step=purge_step)


def _train_stats(state: dict, accuracy: bool) -> dict:
    seen = max(state["seen"], 1)
    stats = {"train_loss": state["loss_sum"] / seen}
    if accuracy:
        stats["train_accuracy"] = state["correct"] / seen
    return stats


def make_optimizer(
    model: nn.Module, lr: float, weight_decay: float, device: torch.device, layer_decay: float = 1.0
) -> torch.optim.Optimizer:
    """AdamW, no decay on biases and LayerNorm weights, fused kernels where available.

    With ``layer_decay`` < 1 each block below the top trains at ``layer_decay`` times the rate of
    the block above it (embeddings lowest, head at the full rate): lower layers hold more general
    features and need less change.
    """
    depth = len(encoder_layers(model))
    groups: dict[tuple[int, bool], list] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            groups.setdefault((_layer_of(name, depth), param.ndim >= 2), []).append(param)
    param_groups = [
        {
            "params": params,
            "weight_decay": weight_decay if decays else 0.0,
            "lr": lr * layer_decay ** (depth + 1 - layer),
        }
        for (layer, decays), params in sorted(groups.items())
    ]
    try:
        return torch.optim.AdamW(param_groups, lr=lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(param_groups, lr=lr)


def _layer_of(name: str, depth: int) -> int:
    """0 for embeddings, i + 1 for block i, depth + 1 for pooler and head."""
    match = re.search(r"(?:layer|blks)\.(\d+)\.", name)
    if match:
        return int(match.group(1)) + 1
    return 0 if "embedding" in name else depth + 1


def linear_schedule(
    optimizer: torch.optim.Optimizer, warmup: int, total: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup to the peak learning rate, then linear decay to zero."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def optimizer_step(model: nn.Module, optimizer, scaler, max_grad_norm: float) -> bool:
    """Clip and step; False (and no step) when a gradient is not finite outside fp16 scaling."""
    scaler.unscale_(optimizer)
    stepped = True
    if max_grad_norm > 0:
        grads = [p for p in model.parameters() if p.grad is not None]
        # foreach: one fused norm over all gradients instead of a hundred small ones
        norm = torch.nn.utils.clip_grad_norm_(grads, max_grad_norm, foreach=True)
        # fp16's scaler skips such steps itself and lowers its scale; elsewhere they are an error
        stepped = scaler.is_enabled() or bool(torch.isfinite(norm))
    if stepped:
        scaler.step(optimizer)
        scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return stepped


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _precision_name(dtype: torch.dtype | None) -> str:
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def _check_output_dir(output: Path, overwrite: bool) -> None:
    if output.exists() and not output.is_dir():
        raise ConfigError(f"--output {output}: exists and is not a directory")
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        last = last_checkpoint(output)
        if last is not None and not (output / RESULTS).is_file():
            raise ConfigError(
                f"--output {output}: an unfinished run with {last.path.name}; continue it with "
                f"--resume auto (or bertfit train --resume {output}), or pass --overwrite to start again"
            )
        raise ConfigError(
            f"--output {output}: directory exists and is not empty; pass --overwrite to replace it"
        )


def _start_run_dir(output: Path, config: TrainConfig, encoder: Encoder, data: TrainingData) -> None:
    """Clear an overwritten run and write the resolved config; results.json comes only at the end."""
    if output.is_dir():
        shutil.rmtree(output)
    output.mkdir(parents=True)
    resolved = config.to_dict() | {"model": config.model or DEFAULT_MODEL}
    columns = {"text": config.text_column, "pair": config.pair_column, "label": config.label_column}
    if data.task:
        from bertfit.data.tasks import get_task

        task = get_task(data.task)
        columns = {"text": task.text, "pair": task.pair, "label": task.label}
    write_json(
        output / RUN_CONFIG,
        {
            "version": __version__,
            "task": data.task,
            "problem": data.problem,
            "config": resolved,
            "encoder": {"kind": encoder.kind, "name": encoder.name, "path": str(encoder.path)},
            "columns": columns,
            "labels": data.labels,
            "label_is_int": data.train.label_is_int,
            "label_separator": config.label_separator,
        },
    )


def _ensure_logging() -> None:
    if not log.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
