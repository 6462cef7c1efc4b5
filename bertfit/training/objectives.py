"""The objectives: how each kind of model is packed, built, fed a batch and judged on dev.

A classifier (single-label, regression, multi-label) and a bi-encoder (cosine, contrastive,
softmax) each become a ``Trainee`` for the one loop in ``fit.py``, plus what the run directory
records about them. ``run.py`` drives every objective through the same steps.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bertfit.config.train import TrainConfig
from bertfit.data.examples import Examples
from bertfit.data.labels import MULTI, PROBLEMS, REGRESSION, SINGLE, label_targets
from bertfit.data.packing import Packed, Tokenizer, collate, pack_cached
from bertfit.errors import ConfigError
from bertfit.evaluation.metrics import score_outputs, sigmoid, tune_thresholds
from bertfit.inference.run import compute_logits
from bertfit.models.adapters import freeze
from bertfit.models.biencoder import (
    bi_encoder_batch_loss,
    dev_metrics,
    load_bi_encoder,
    load_bi_encoder_weights,
    save_bi_encoder,
    scale_scores,
)
from bertfit.models.classifier import build_classifier, load_classifier, save_classifier
from bertfit.models.encoders import Encoder
from bertfit.models.fastbert import training_forward, use_activation_checkpointing
from bertfit.models.heads import init_regression_bias
from bertfit.models.pooling import Pooling
from bertfit.rundir import EMBEDDING
from bertfit.runtime import autocast
from bertfit.training.distributed import ONE_PROCESS, gather_rows
from bertfit.training.inputs import TrainingData

log = logging.getLogger("bertfit")


@dataclass
class Split:
    """One side of the data, packed, with its targets (label ids, scores or 0/1 label rows)."""

    examples: Examples
    packed: Packed
    label_ids: np.ndarray


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
    # batch_loss takes part in collectives (the bi-encoder's negatives gathered across ranks):
    # with several processes every rank calls it for every pass, with an empty slice if need be
    every_rank: bool = False


@dataclass
class Objective:
    """A trainee with its data digest, the checkpoint loader and what ``bertfit.json`` adds."""

    trainee: Trainee
    fingerprint: str  # digest of the packed inputs and targets: a resume must see the same
    load_checkpoint: Callable[[Path], None]
    meta: dict = field(default_factory=dict)  # extra bertfit.json entries
    summary: str = ""  # the log line that opens the run
    splits: dict = field(default_factory=dict)  # what the finishing step scores (classifiers)


def recompute_activations(model: nn.Module, enabled: bool, encoder_name: str) -> None:
    """--activation-checkpointing on the model's encoder (a bi-encoder's or a classifier's)."""
    if not enabled:
        return
    encoder = getattr(model, "bert", None)
    encoder = encoder if encoder is not None else getattr(model, "base_model", None)
    if encoder is None or not use_activation_checkpointing(encoder):
        raise ConfigError(
            f"--activation-checkpointing: the encoder {encoder_name} does not support it "
            "(Dive into Deep Learning checkpoints); drop the option or use a Hugging Face encoder"
        )


def data_fingerprint(*arrays: np.ndarray) -> str:
    """A digest of the packed inputs and targets: a resumed run must see the same data."""
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:32]


def prepare_split(
    tokenizer: Tokenizer, examples: Examples, labels: list[str], problem: str, config: TrainConfig
) -> Split:
    packed = pack_cached(
        tokenizer,
        examples.texts,
        examples.pairs,
        config.max_length,
        config.truncation,
        config.cache_dir,
    )
    targets = label_targets(examples.labels, labels, PROBLEMS[problem].label_kind)
    return Split(examples, packed, targets)


def classifier_objective(
    config: TrainConfig,
    encoder: Encoder,
    tokenizer: Tokenizer,
    data: TrainingData,
    device,
    dtype,
    world=ONE_PROCESS,
) -> Objective:
    """Single-label, regression or multi-label classification with a new head (``world``: the
    training processes, which share the dev scoring)."""
    problem, labels = data.problem, data.labels
    train_set = prepare_split(tokenizer, data.train, labels, problem, config)
    dev_set = prepare_split(tokenizer, data.dev, labels, problem, config)
    fingerprint = data_fingerprint(
        train_set.packed.ids, train_set.packed.offsets, train_set.label_ids,
        dev_set.packed.ids, dev_set.packed.offsets, dev_set.label_ids,
    )  # fmt: skip
    seed_everything(config.seed)
    # the model first: weights that do not fit the config fail before anything is logged
    model = build_classifier(encoder, labels, config.dropout, seed=config.seed, problem=problem)
    if problem == REGRESSION:
        init_regression_bias(model, float(train_set.label_ids.mean()))
    freeze(model, config.freeze_embeddings, config.train_last_layers, config.train_word_embeddings)
    recompute_activations(model, config.activation_checkpointing, encoder.name)
    pad_id = tokenizer.pad_token_id
    what = "a score" if problem == REGRESSION else f"{len(labels)} labels"
    return Objective(
        Trainee(
            model,
            train_set.packed.lengths,
            classifier_batch_loss(model, train_set, problem, pad_id, device, dtype),
            classifier_evaluation(
                model, dev_set, labels, problem, config, pad_id, device, dtype, world
            ),
            lambda folder: save_classifier(model, tokenizer, folder),
        ),
        fingerprint,
        lambda path: model.load_state_dict(load_classifier(path, encoder.kind)[0].state_dict()),
        summary=f"{len(data.train)} training and {len(data.dev)} dev examples, {what}",
        splits={"dev": dev_set},
    )


def classifier_batch_loss(model, split: Split, problem: str, pad_id: int, device, dtype):
    forward, loss_of = training_forward(model), PROBLEMS[problem].loss

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


def classifier_evaluation(
    model, split: Split, labels, problem, config, pad_id, device, dtype, world=ONE_PROCESS
):
    def evaluate() -> tuple[dict, list[float] | None]:
        # with several processes each scores every world.size-th example and all gather them
        shard = np.arange(world.rank, len(split.packed), world.size)
        packed = split.packed if not world.distributed else split.packed.take(shard)
        logits = compute_logits(model, packed, pad_id, max(64, config.batch_size), device, dtype)
        logits = gather_rows(world, shard, logits, len(split.packed))
        thresholds = None
        if problem == MULTI and config.tune_thresholds:
            thresholds = [float(t) for t in tune_thresholds(split.label_ids, sigmoid(logits))]
        return score_outputs(problem, split.label_ids, logits, labels, thresholds), thresholds

    return evaluate


def bi_encoder_objective(
    config: TrainConfig,
    encoder: Encoder,
    tokenizer: Tokenizer,
    data: TrainingData,
    device,
    dtype,
    world=ONE_PROCESS,
) -> Objective:
    """A sentence embedder (shared encoder, pooled) trained with ``config.objective``
    (``world``: the training processes, across which the contrastive negatives are gathered)."""
    if encoder.kind != "hf":
        raise ConfigError("--objective needs a Hugging Face-format encoder")
    if data.train.pairs is None:
        raise ConfigError("--objective needs text pairs: give --pair-column")
    pooling = Pooling(config.pooling, config.normalize, config.max_length)
    score_range = _score_range(data.train) if config.objective == "cosine" else None
    train_side, dev_side = (
        _pair_side(examples, tokenizer, config, data.labels, score_range)
        for examples in (data.train, data.dev)
    )
    fingerprint = data_fingerprint(
        *(train_side[k].ids for k in "ab"),
        *(dev_side[k].ids for k in "ab"),
        *(np.asarray(side.get("y", [])) for side in (train_side, dev_side)),
    )
    seed_everything(config.seed)
    num_labels = len(data.labels) if config.objective == "softmax" else 0
    model = load_bi_encoder(encoder.path, pooling, num_labels, config.seed)
    freeze(model, config.freeze_embeddings, config.train_last_layers, config.train_word_embeddings)
    recompute_activations(model, config.activation_checkpointing, encoder.name)
    pad_id = tokenizer.pad_token_id
    meta = {"problem": EMBEDDING, "objective": config.objective, "pooling": pooling.__dict__}
    if score_range is not None:
        meta["score_range"] = list(score_range)
    evaluate = lambda: (  # noqa: E731
        dev_metrics(model, dev_side, config.objective, data.labels, pad_id, device, dtype, world),
        None,
    )
    return Objective(
        Trainee(
            model,
            np.maximum(train_side["a"].lengths, train_side["b"].lengths),
            bi_encoder_batch_loss(model, train_side, config, pad_id, device, dtype, world),
            evaluate,
            lambda folder: save_bi_encoder(model, tokenizer, folder),
            # the contrastive loss gathers every rank's positives: all ranks take every pass
            every_rank=config.objective == "contrastive" and world.distributed,
        ),
        fingerprint,
        lambda path: load_bi_encoder_weights(model, path),
        meta,
        f"bi-encoder, {config.objective} objective: {len(data.train)} training and "
        f"{len(data.dev)} dev pairs",
    )


def _score_range(train: Examples) -> tuple[float, float]:
    """The cosine objective's gold range: kept when scores lie in [0, 1], else min and max."""
    scores = np.asarray(train.labels, dtype=np.float32)
    if scores.min() >= 0 and scores.max() <= 1:
        return 0.0, 1.0
    return float(scores.min()), float(scores.max())


def _pair_side(examples: Examples, tokenizer, config: TrainConfig, labels, score_range) -> dict:
    """Both texts packed, ids telling duplicate texts apart, and the objective's targets."""

    def pack(texts: list[str]) -> Packed:
        return pack_cached(
            tokenizer, texts, None, config.max_length, config.truncation, config.cache_dir
        )

    out = {"a": pack(examples.texts), "b": pack(examples.pairs)}
    _, ids = np.unique(
        np.asarray(examples.texts + examples.pairs, dtype=object), return_inverse=True
    )
    out["a_ids"], out["b_ids"] = ids[: len(examples)], ids[len(examples) :]
    if config.objective == "cosine":
        out["y"] = scale_scores(np.asarray(examples.labels, dtype=np.float32), *score_range)
    elif config.objective == "softmax":
        out["y"] = label_targets(examples.labels, labels, "single")
    return out


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
