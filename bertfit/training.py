"""Fine-tuning: read the data, pack it, build the model, run the loop, keep the best checkpoint.

``fit()`` is the loop, readable top to bottom: forward, loss, backward, clip, step, schedule,
log, evaluate, save.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from . import __version__
from .card import write_model_card
from .config import DEFAULT_MODEL, TrainConfig
from .data import (
    Columns,
    Examples,
    check_known_labels,
    label_set,
    label_targets,
    read_examples,
    stratified_split,
    stratify_keys,
)
from .encoders import DEFAULT_NAME, Encoder, resolve_encoder
from .errors import ConfigError
from .evaluation import METRICS as PROBLEM_METRICS
from .evaluation import (
    MULTI,
    REGRESSION,
    SINGLE,
    headline,
    score_outputs,
    sigmoid,
    tune_thresholds,
    with_intervals,
)
from .fastbert import training_forward
from .files import append_jsonl, write_json
from .model import (
    build_classifier,
    encoder_layers,
    freeze,
    init_regression_bias,
    load_tokenizer,
    save_classifier,
    use_fast_dropout,
)
from .packing import Packed, collate, length_grouped_batches, pack_cached
from .predict import RESULTS, RUN_CONFIG, Run, compute_logits, load
from .runtime import autocast, pick_device, pick_precision, set_threads

log = logging.getLogger("bertfit")
METRICS = "metrics.jsonl"
STEPS = "steps.jsonl"  # loss and learning rate every few optimizer steps, for the report
DEV_PREDICTIONS = "dev_predictions.jsonl"


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
        from .tasks import get_task

        return get_task(config.task).problem
    return REGRESSION if config.regression else MULTI if config.multi_label else SINGLE


def choose_metric(config: TrainConfig, problem: str, labels: list[str]) -> str:
    """--metric, checked against the problem, else the task's first metric or the problem's."""
    allowed = PROBLEM_METRICS[problem]
    if config.metric is None:
        if config.task:
            from .tasks import get_task

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
    """
    config.validate()
    _ensure_logging()
    if config.tensorboard:
        _tensorboard_writer_class()  # a missing package stops the run before anything is written
    output = Path(config.output)
    _check_output_dir(output, config.overwrite)
    set_threads(config.threads)
    device = pick_device(config.device)
    dtype = pick_precision(config.precision, device)
    encoder = resolve_encoder(config.model)
    tokenizer = load_tokenizer(encoder)
    data = read_training_data(config)
    if config.objective is not None:
        return _train_bi_encoder(config, encoder, tokenizer, data, device, dtype, output)
    train_examples, dev_examples, labels, problem = data.train, data.dev, data.labels, data.problem
    config = dataclasses.replace(config, metric=choose_metric(config, problem, labels))
    train_set = _prepare(tokenizer, train_examples, labels, problem, config)
    dev_set = _prepare(tokenizer, dev_examples, labels, problem, config)
    config = encoder_defaults(config, encoder)
    lr = config.lr
    what = "a score" if problem == REGRESSION else f"{len(labels)} labels"
    log.info(
        f"{len(train_examples)} training and {len(dev_examples)} dev examples, {what}; "
        f"encoder {encoder.name}; device {device}, {_precision_name(dtype)}, lr {lr:g}"
    )

    _seed_everything(config.seed)
    model = build_classifier(encoder, labels, config.dropout, seed=config.seed, problem=problem)
    if problem == REGRESSION:
        init_regression_bias(model, float(train_set.label_ids.mean()))
    freeze(model, config.freeze_embeddings, config.train_last_layers, config.train_word_embeddings)
    if device.type == "cpu":
        use_fast_dropout(model)
    model.to(device)

    _start_run_dir(output, config, encoder, data)
    save = lambda: save_classifier(model, tokenizer, output)  # noqa: E731
    summary = fit(
        model,
        train_set,
        dev_set,
        labels,
        config,
        lr,
        device,
        dtype,
        tokenizer.pad_token_id,
        output,
        save,
        problem,
    )
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
    from .report import build_report

    build_report(output)
    log.info(
        f"done: best dev {config.metric} {summary['dev'][config.metric]:.4f} (epoch {summary['best_epoch']}); run in {output}"
    )
    return load(output, device=str(device))


def _train_bi_encoder(
    config: TrainConfig,
    encoder: Encoder,
    tokenizer,
    data: TrainingData,
    device,
    dtype,
    output: Path,
) -> Run:
    """Fine-tune ``encoder`` as a bi-encoder with ``config.objective``; a sentence-transformers run."""
    from .biencoder import fit_bi_encoder, load_bi_encoder, save_bi_encoder, scale_scores
    from .embed import Pooling, read_pooling

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
    config = dataclasses.replace(
        config,
        lr=config.lr or 2e-5,
        layer_lr_decay=config.layer_lr_decay or 1.0,
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
    _seed_everything(config.seed)
    num_labels = len(data.labels) if config.objective == "softmax" else 0
    model = load_bi_encoder(encoder.path, pooling, num_labels, config.seed)
    freeze(model, config.freeze_embeddings, config.train_last_layers, config.train_word_embeddings)
    if device.type == "cpu":
        use_fast_dropout(model)
    model.to(device)
    steps = (
        math.ceil(math.ceil(len(data.train) / config.batch_size) / config.grad_accum)
        * config.epochs
    )
    optimizer = make_optimizer(model, config.lr, config.weight_decay, device, config.layer_lr_decay)
    scheduler = linear_schedule(optimizer, round(config.warmup_ratio * steps), steps)
    _start_run_dir(output, config, encoder, data)
    meta_path = output / RUN_CONFIG
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta.update(problem="embedding", objective=config.objective, pooling=pooling.__dict__)
    if config.objective == "cosine":
        meta["score_range"] = [low, high]
    write_json(meta_path, meta)
    log.info(
        f"bi-encoder, {config.objective} objective: {len(data.train)} training and "
        f"{len(data.dev)} dev pairs; encoder {encoder.name}; device {device}, lr {config.lr:g}"
    )
    summary = fit_bi_encoder(
        model,
        train_side,
        dev_side,
        config.objective,
        data.labels,
        config,
        optimizer,
        scheduler,
        device,
        dtype,
        tokenizer.pad_token_id,
        output,
        lambda: save_bi_encoder(model, tokenizer, output),
    )
    summary.update(
        version=__version__,
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
    return output


def _positive_pairs(examples: Examples, task_name: str) -> Examples:
    """The pairs of a labelled task that are positives for in-batch negatives: entailment (NLI)
    or paraphrase/duplicate (label 1), as SBERT trains on NLI."""
    from .tasks import get_task

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
        from .tasks import get_task

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
    from .tasks import get_task, locate, read_split, split_file

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
    from .files import atomic_open

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
    from .model import load_classifier

    model, _ = load_classifier(output, kind)
    logits = compute_logits(model.to(device), split.packed, pad_id, 64, device, dtype)
    cut = None if thresholds is None else [thresholds[label] for label in labels]
    metrics = with_intervals(problem, split.label_ids, logits, labels, cut)
    if problem == SINGLE:
        from .predict import softmax

        metrics["probabilities"] = softmax(logits)
    return metrics


def fit(
    model: nn.Module,
    train_set: Split,
    dev_set: Split,
    labels: list[str],
    config: TrainConfig,
    lr: float,
    device: torch.device,
    dtype: torch.dtype | None,
    pad_id: int,
    output: Path,
    save_best,
    problem: str = SINGLE,
) -> dict:
    """The training loop. Returns the summary that becomes ``results.json``."""
    loss_of = LOSSES[problem]
    batches_per_epoch = math.ceil(len(train_set.packed) / config.batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / config.grad_accum)
    total_steps = steps_per_epoch * config.epochs
    optimizer = make_optimizer(model, lr, config.weight_decay, device, config.layer_lr_decay)
    scheduler = linear_schedule(optimizer, round(config.warmup_ratio * total_steps), total_steps)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    state = {
        "step": 0,
        "best": -math.inf,
        "best_epoch": 0,
        "best_step": 0,
        "bad_evals": 0,
        "dev": {},
    }
    train_seconds, train_seen = 0.0, 0
    steps_log: list[dict] = []
    log_every = max(1, total_steps // 200)
    board = open_tensorboard(output) if config.tensorboard else None

    def evaluate_and_keep(epoch: int, epoch_stats: dict) -> None:
        dev_logits = compute_logits(
            model, dev_set.packed, pad_id, max(64, config.batch_size), device, dtype
        )
        thresholds = None
        if problem == MULTI and config.tune_thresholds:
            thresholds = tune_thresholds(dev_set.label_ids, sigmoid(dev_logits))
        dev = score_outputs(problem, dev_set.label_ids, dev_logits, labels, thresholds)
        record = {
            "epoch": epoch,
            "step": state["step"],
            **epoch_stats,
            "dev": headline(dev),
            "time": round(time.time(), 3),
        }
        append_jsonl(output / METRICS, record)
        if board is not None:
            for name, value in {
                **epoch_stats,
                **{f"dev/{k}": v for k, v in record["dev"].items()},
            }.items():
                board.add_scalar(name if "/" in name else f"train/{name}", value, state["step"])
        score = state["last_dev"] = dev[config.metric]
        if score > state["best"]:
            state.update(
                best=score,
                best_epoch=epoch,
                best_step=state["step"],
                bad_evals=0,
                dev=dev,
                thresholds=thresholds,
            )
            save_best()
        else:
            state["bad_evals"] += 1

    forward = training_forward(model)
    model.train()
    for epoch in range(1, config.epochs + 1):
        batches = length_grouped_batches(
            train_set.packed.lengths, config.batch_size, config.seed + epoch, config.length_groups
        )
        bar = tqdm(
            total=len(train_set.packed),
            desc=f"epoch {epoch}/{config.epochs}",
            unit="ex",
            disable=not config.progress,
            file=sys.stderr,
            mininterval=0.5,
            leave=False,
        )
        loss_sum, correct, seen = 0.0, 0, 0
        started = time.perf_counter()
        for i, indices in enumerate(batches):
            batch = {
                k: v.to(device, non_blocking=True)
                for k, v in collate(train_set.packed, indices, pad_id, train_set.label_ids).items()
            }
            targets = batch.pop("labels")
            with autocast(device, dtype):
                logits = forward(**batch)
            loss = loss_of(logits.float(), targets)
            scaler.scale(loss / config.grad_accum).backward()
            if (i + 1) % config.grad_accum == 0 or i + 1 == len(batches):
                optimizer_step(model, optimizer, scaler, config.max_grad_norm)
                scheduler.step()
                state["step"] += 1
                if state["step"] % log_every == 0:  # about 200 points per run for the report
                    steps_log.append(
                        {
                            "step": state["step"],
                            "epoch": epoch,
                            "loss": round(float(loss.item()), 5),
                            "lr": scheduler.get_last_lr()[-1],
                            "examples_per_second": round(seen / (time.perf_counter() - started), 2),
                        }
                    )
            loss_sum += loss.item() * len(
                indices
            )  # .item() syncs; once per batch is cheap next to the step
            if problem == SINGLE:
                correct += int((logits.argmax(-1) == targets).sum())
            seen += len(indices)
            bar.update(len(indices))
            bar.set_postfix(
                loss=f"{loss_sum / seen:.4f}",
                ex_s=f"{seen / (time.perf_counter() - started):.0f}",
                refresh=False,
            )
            if (
                config.eval_steps
                and state["step"] % config.eval_steps == 0
                and (i + 1) % config.grad_accum == 0
            ):
                pause = time.perf_counter()
                evaluate_and_keep(epoch, _train_stats(problem, loss_sum, correct, seen))
                started += time.perf_counter() - pause  # evaluation time is not training time
                model.train()
        bar.close()
        for record in steps_log:
            append_jsonl(output / STEPS, record)
            if board is not None:
                for name in ("loss", "lr", "examples_per_second"):
                    board.add_scalar(f"step/{name}", record[name], record["step"])
        steps_log.clear()
        elapsed = time.perf_counter() - started
        train_seconds += elapsed
        train_seen += seen
        stats = _train_stats(problem, loss_sum, correct, seen)
        stats["examples_per_second"] = seen / elapsed
        evaluate_and_keep(epoch, stats)
        model.train()
        log.info(
            f"epoch {epoch}/{config.epochs}: loss {stats['train_loss']:.4f}, "
            + (f"train acc {stats['train_accuracy']:.4f}, " if "train_accuracy" in stats else "")
            + f"dev {config.metric} {state['last_dev']:.4f}, "
            f"{stats['examples_per_second']:.1f} examples/s"
        )
        if (
            config.early_stopping_patience is not None
            and state["bad_evals"] >= config.early_stopping_patience
        ):
            log.info(f"early stopping: no dev improvement in {state['bad_evals']} evaluations")
            break
    if board is not None:
        board.close()
    summary = {
        "version": __version__,
        "metric": config.metric,
        "best_epoch": state["best_epoch"],
        "best_step": state["best_step"],
        "steps": state["step"],
        "dev": state["dev"],
        "train_seconds": round(train_seconds, 3),
        "train_examples_per_second": round(train_seen / train_seconds, 2)
        if train_seconds
        else None,
    }
    if problem == MULTI:
        cut = state.get("thresholds") or [0.5] * len(labels)
        summary["thresholds"] = {label: float(t) for label, t in zip(labels, cut)}
    return summary


def _tensorboard_writer_class():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError(
            "--tensorboard needs the tensorboard package: pip install tensorboard"
        ) from None
    return SummaryWriter


def open_tensorboard(output: Path):
    """A TensorBoard writer into ``output/tensorboard`` (the same scalars as the report)."""
    return _tensorboard_writer_class()(str(output / "tensorboard"))


def _train_stats(problem: str, loss_sum: float, correct: int, seen: int) -> dict:
    stats = {"train_loss": loss_sum / seen}
    if problem == SINGLE:
        stats["train_accuracy"] = correct / seen
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


def optimizer_step(model: nn.Module, optimizer, scaler, max_grad_norm: float) -> None:
    scaler.unscale_(optimizer)
    if max_grad_norm > 0:
        grads = [p for p in model.parameters() if p.grad is not None]
        # foreach: one fused norm over all gradients instead of a hundred small ones
        torch.nn.utils.clip_grad_norm_(grads, max_grad_norm, foreach=True)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _precision_name(dtype: torch.dtype | None) -> str:
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def _check_output_dir(output: Path, overwrite: bool) -> None:
    if output.exists() and not output.is_dir():
        raise ConfigError(f"--output {output}: exists and is not a directory")
    if output.is_dir() and any(output.iterdir()):
        if not overwrite:
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
        from .tasks import get_task

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
