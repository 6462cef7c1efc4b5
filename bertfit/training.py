"""Fine-tuning: read the data, pack it, build the model, run the loop, keep the best checkpoint.

``fit()`` is the loop, readable top to bottom: forward, loss, backward, clip, step, schedule,
log, evaluate, save.
"""

from __future__ import annotations

import dataclasses
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
from .config import DEFAULT_MODEL, TrainConfig
from .data import Columns, Examples, check_known_labels, label_set, read_examples, stratified_split
from .encoders import DEFAULT_NAME, Encoder, resolve_encoder
from .errors import ConfigError
from .evaluation import classification_metrics, headline
from .fastbert import training_forward
from .files import append_jsonl, write_json
from .model import (
    build_classifier,
    encoder_layers,
    freeze,
    load_tokenizer,
    save_classifier,
    use_fast_dropout,
)
from .packing import Packed, collate, length_grouped_batches, pack_cached
from .predict import RESULTS, RUN_CONFIG, Run, compute_logits, load
from .runtime import autocast, pick_device, pick_precision, set_threads

log = logging.getLogger("bertfit")
METRICS = "metrics.jsonl"


@dataclass
class Split:
    """One side of the data, packed, with label ids."""

    examples: Examples
    packed: Packed
    label_ids: np.ndarray


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
    """Fine-tune ``config.model`` on ``config.train`` and return the finished run.

    Example: ``bertfit.train(TrainConfig(train="train.tsv", output="runs/x", text_column="sentence"))``.
    """
    config.validate()
    _ensure_logging()
    output = Path(config.output)
    _check_output_dir(output, config.overwrite)
    set_threads(config.threads)
    device = pick_device(config.device)
    dtype = pick_precision(config.precision, device)
    encoder = resolve_encoder(config.model)
    tokenizer = load_tokenizer(encoder)
    train_examples, dev_examples, labels = read_training_data(config)
    if config.metric == "f1" and len(labels) != 2:
        raise ConfigError(f"--metric f1 needs two labels; the training data has {len(labels)}")
    train_set = _prepare(tokenizer, train_examples, labels, config)
    dev_set = _prepare(tokenizer, dev_examples, labels, config)
    config = encoder_defaults(config, encoder)
    lr = config.lr
    log.info(
        f"{len(train_examples)} training and {len(dev_examples)} dev examples, {len(labels)} labels; "
        f"encoder {encoder.name}; device {device}, {_precision_name(dtype)}, lr {lr:g}"
    )

    _seed_everything(config.seed)
    model = build_classifier(encoder, labels, config.dropout, seed=config.seed)
    freeze(model, config.freeze_embeddings, config.train_last_layers, config.train_word_embeddings)
    if device.type == "cpu":
        use_fast_dropout(model)
    model.to(device)

    _start_run_dir(output, config, encoder, labels, train_examples)
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
    )
    summary.update(
        labels=labels,
        train_examples=len(train_examples),
        dev_examples=len(dev_examples),
        device=str(device),
        precision=_precision_name(dtype),
    )
    write_json(output / RESULTS, summary)  # last: its presence marks a finished run
    log.info(
        f"done: best dev {config.metric} {summary['dev'][config.metric]:.4f} (epoch {summary['best_epoch']}); run in {output}"
    )
    return load(output, device=str(device))


def read_training_data(config: TrainConfig) -> tuple[Examples, Examples, list[str]]:
    """Train and dev examples and the label names; dev is carved from train when not given."""
    columns = Columns(config.text_column, config.pair_column, config.label_column)
    train_examples = read_examples(
        config.train, columns, limit=config.train_limit, skip_bad_rows=config.skip_bad_rows
    )
    labels = label_set(train_examples.labels, train_examples.label_is_int)
    if len(labels) < 2:
        raise ConfigError(
            f"{config.train}: only one label ({labels[0]!r}) in the training data; need at least two"
        )
    if config.dev:
        dev_examples = read_examples(config.dev, columns, skip_bad_rows=config.skip_bad_rows)
        check_known_labels(dev_examples, labels)
    else:
        train_idx, dev_idx = stratified_split(
            train_examples.labels, config.dev_fraction, config.seed
        )
        train_examples, dev_examples = (
            train_examples.subset(train_idx),
            train_examples.subset(dev_idx),
        )
    return train_examples, dev_examples, labels


def _prepare(tokenizer, examples: Examples, labels: list[str], config: TrainConfig) -> Split:
    packed = pack_cached(
        tokenizer,
        examples.texts,
        examples.pairs,
        config.max_length,
        config.truncation,
        config.cache_dir,
    )
    index = {label: i for i, label in enumerate(labels)}
    return Split(
        examples, packed, np.asarray([index[label] for label in examples.labels], dtype=np.int64)
    )


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
) -> dict:
    """The training loop. Returns the summary that becomes ``results.json``."""
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

    def evaluate_and_keep(epoch: int, epoch_stats: dict) -> None:
        dev_logits = compute_logits(
            model, dev_set.packed, pad_id, max(64, config.batch_size), device, dtype
        )
        dev = classification_metrics(dev_set.label_ids, dev_logits.argmax(-1), labels)
        record = {
            "epoch": epoch,
            "step": state["step"],
            **epoch_stats,
            "dev": headline(dev),
            "time": round(time.time(), 3),
        }
        append_jsonl(output / METRICS, record)
        score = state["last_dev"] = dev[config.metric]
        if score > state["best"]:
            state.update(
                best=score, best_epoch=epoch, best_step=state["step"], bad_evals=0, dev=dev
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
            loss = F.cross_entropy(logits.float(), targets)
            scaler.scale(loss / config.grad_accum).backward()
            if (i + 1) % config.grad_accum == 0 or i + 1 == len(batches):
                optimizer_step(model, optimizer, scaler, config.max_grad_norm)
                scheduler.step()
                state["step"] += 1
            loss_sum += loss.item() * len(
                indices
            )  # .item() syncs; once per batch is cheap next to the step
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
                evaluate_and_keep(
                    epoch, {"train_loss": loss_sum / seen, "train_accuracy": correct / seen}
                )
                started += time.perf_counter() - pause  # evaluation time is not training time
                model.train()
        bar.close()
        elapsed = time.perf_counter() - started
        train_seconds += elapsed
        train_seen += seen
        stats = {
            "train_loss": loss_sum / seen,
            "train_accuracy": correct / seen,
            "examples_per_second": seen / elapsed,
        }
        evaluate_and_keep(epoch, stats)
        model.train()
        log.info(
            f"epoch {epoch}/{config.epochs}: loss {stats['train_loss']:.4f}, train acc {stats['train_accuracy']:.4f}, "
            f"dev {config.metric} {state['last_dev']:.4f}, "
            f"{stats['examples_per_second']:.1f} examples/s"
        )
        if (
            config.early_stopping_patience is not None
            and state["bad_evals"] >= config.early_stopping_patience
        ):
            log.info(f"early stopping: no dev improvement in {state['bad_evals']} evaluations")
            break
    return {
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


def _start_run_dir(
    output: Path,
    config: TrainConfig,
    encoder: Encoder,
    labels: list[str],
    train_examples: Examples,
) -> None:
    """Clear an overwritten run and write the resolved config; results.json comes only at the end."""
    if output.is_dir():
        shutil.rmtree(output)
    output.mkdir(parents=True)
    resolved = config.to_dict() | {"model": config.model or DEFAULT_MODEL}
    write_json(
        output / RUN_CONFIG,
        {
            "version": __version__,
            "task": "classification",
            "config": resolved,
            "encoder": {"kind": encoder.kind, "name": encoder.name, "path": str(encoder.path)},
            "columns": {
                "text": config.text_column,
                "pair": config.pair_column,
                "label": config.label_column,
            },
            "labels": labels,
            "label_is_int": train_examples.label_is_int,
        },
    )


def _ensure_logging() -> None:
    if not log.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
