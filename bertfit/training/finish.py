"""The end of a run: score the best model as saved, write results.json, the model card and the
report, and hand back what ``bertfit.load`` would."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from bertfit import __version__
from bertfit.data.examples import Examples
from bertfit.data.labels import MULTI, SINGLE, label_targets
from bertfit.evaluation.metrics import softmax, with_intervals
from bertfit.files import atomic_open, write_json
from bertfit.inference.embed import load_embedder, open_embedder
from bertfit.inference.run import compute_logits, load
from bertfit.models.biencoder import (
    load_nli_head,
    nearest_positives,
    pair_scores,
    score_pairs_with_intervals,
)
from bertfit.models.classifier import load_classifier
from bertfit.report.card import write_model_card
from bertfit.report.page import build_report
from bertfit.rundir import CARD, DEV_PREDICTIONS, EMBEDDING, REPORT, RESULTS, is_embedding_run
from bertfit.runtime import pick_precision
from bertfit.training.inputs import TrainingData, positive_pairs
from bertfit.training.objectives import Split, prepare_split

log = logging.getLogger("bertfit")


def loop_results(state, config) -> dict:
    """The loop's part of results.json, from its final state."""
    per_second = state.train_seen / state.train_seconds if state.train_seconds else None
    return {
        "version": __version__,
        "metric": config.metric,
        "best_epoch": state.best_epoch,
        "best_step": state.best_step,
        "steps": state.step,
        "dev": state.dev,
        "skipped_batches": state.skipped_batches,
        "train_seconds": round(state.train_seconds, 3),
        "train_examples_per_second": None if per_second is None else round(per_second, 2),
    }


def finish_classifier(
    summary: dict, thresholds, config, data: TrainingData, dev: Split, tokenizer, context
):
    """Score the best model on dev (and a labelled test split), write every output, load it."""
    output, device, dtype, kind = context
    labels, problem = data.labels, data.problem
    if problem == MULTI:
        cut = thresholds or [0.5] * len(labels)
        summary["thresholds"] = {label: float(t) for label, t in zip(labels, cut)}
    summary.update(labels=labels, problem=problem, **run_facts(data, device, dtype))
    model, _ = load_classifier(output, kind)  # the best model as saved, not the last in memory
    model.to(device)

    def score(split: Split) -> dict:
        logits = compute_logits(model, split.packed, tokenizer.pad_token_id, 64, device, dtype)
        cut = summary.get("thresholds")
        cut = None if cut is None else [cut[label] for label in labels]
        metrics = with_intervals(problem, split.label_ids, logits, labels, cut)
        if problem == SINGLE:
            metrics["probabilities"] = softmax(logits)
        return metrics

    log.info(
        f"scoring the best model (step {summary['best_step']}) on {len(data.dev):,} dev examples"
    )
    best_dev = score(dev)
    summary["dev_ci"] = best_dev.pop("ci")
    if problem == SINGLE:
        warn_if_one_class(best_dev, labels, len(data.dev))
    if problem == SINGLE:
        write_dev_predictions(output, data.dev, best_dev.pop("probabilities"), labels)
    if data.test is not None:
        test = score(prepare_split(tokenizer, data.test, labels, problem, config))
        summary["test_ci"] = test.pop("ci")
        test.pop("probabilities", None)
        summary["test"], summary["test_split"] = test, data.test_name
        log.info(
            f"{data.test_name} ({len(data.test)} examples): {config.metric} "
            f"{summary['test'][config.metric]:.4f}"
        )
    write_outputs(output, summary)
    log.info(f"writing {REPORT}")
    build_report(output)
    log.info(
        f"done: best dev {config.metric} {summary['dev'][config.metric]:.4f} "
        f"(epoch {summary['best_epoch']}); run in {output}"
    )
    pair = " --pair '...'" if data.dev.pairs is not None else ""
    log.info(
        f"wrote {output}: the model, {CARD} (model card) and {REPORT} (curves, confusion, "
        f"mistakes)\nnext: bertfit predict {output} --text '...'{pair}   "
        f"(or --input FILE --output predictions.csv; bertfit evaluate {output} --data FILE)"
    )
    return load(output, device=str(device))


def finish_bi_encoder(summary: dict, config, data: TrainingData, output: Path, device):
    """Score the bi-encoder as saved on dev (and a labelled test split) with 95% bootstrap
    intervals, write results.json, the model card, the dev predictions and the report, and
    return its ``Embedder``."""
    dtype = pick_precision(config.precision, device)
    objective = config.objective
    summary.update(problem=EMBEDDING, objective=objective, **run_facts(data, device, dtype))
    if objective == "softmax":
        summary["labels"] = data.labels
    embedder = open_embedder(str(output), str(device), config.precision)
    score = bi_encoder_scorer(embedder, objective, data.labels, output)
    log.info(f"scoring the best model (step {summary['best_step']}) on {len(data.dev):,} dev pairs")
    best_dev, per_pair = score(data.dev)
    summary["dev_ci"] = best_dev.pop("ci")
    write_bi_encoder_predictions(output, data.dev, objective, per_pair, data.labels)
    test = data.test
    if test is not None and objective == "contrastive" and data.task:
        test = positive_pairs(test, data.task)
    if test is not None and (test.labels is not None or objective == "contrastive"):
        summary["test"], _ = score(test)
        summary["test_ci"], summary["test_split"] = summary["test"].pop("ci"), data.test_name
    write_outputs(output, summary)
    log.info(f"writing {REPORT}")
    build_report(output)
    metric = summary["metric"]
    log.info(f"done: best dev {metric} {summary['dev'][metric]:.4f}; run in {output}")
    log.info(
        f"wrote {output}: a sentence-transformers model, {CARD} (model card) and {REPORT} "
        f"(curves, dev metrics with intervals)\nnext: bertfit similarity {output} --text '...' "
        f"--pair '...'   (or bertfit embed / search {output} ...; bertfit.load('{output}') or "
        f"SentenceTransformer('{output}') in Python)"
    )
    return load_embedder(str(output), str(device), config.precision)


def bi_encoder_scorer(embedder, objective: str, labels: list[str], output: Path):
    """``score(examples) -> (metrics with "ci", per-pair scores)``: both texts embedded as
    training embedded them (pooled, not normalised), then the objective's dev metric."""
    width = embedder.model.config.hidden_size
    head = load_nli_head(output, width, len(labels)) if objective == "softmax" else None

    def score(examples: Examples) -> tuple[dict, dict]:
        u, v = (
            torch.from_numpy(embedder.encode(texts, batch_size=128, normalize=False))
            for texts in (examples.texts, examples.pairs)
        )
        y = None
        if objective == "cosine":
            y = np.asarray(examples.labels, dtype=np.float64)
        elif objective == "softmax":
            y = label_targets(examples.labels, labels, "single")
        scores = pair_scores(objective, u, v, head)
        per_pair = {"scores": scores, "nearest": None}
        if objective == "contrastive":
            per_pair["nearest"] = nearest_positives(u, v).numpy()
        return score_pairs_with_intervals(objective, y, scores, labels), per_pair

    return score


def write_bi_encoder_predictions(
    output: Path, examples: Examples, objective: str, per_pair: dict, labels: list[str]
) -> None:
    """One line per dev pair, for the report: cosine: gold score and predicted cosine;
    contrastive: whether the pair's own positive was the nearest, and which text was;
    softmax: as a classifier's (label, prediction, probabilities)."""
    scores = per_pair["scores"]
    if objective == "softmax":
        write_dev_predictions(output, examples, softmax(scores), labels)
        return
    with atomic_open(output / DEV_PREDICTIONS, "w", encoding="utf-8") as handle:
        for i, text in enumerate(examples.texts):
            record = {"text": text, "pair": examples.pairs[i]}
            if objective == "cosine":
                record |= {"label": float(examples.labels[i]), "predicted": float(scores[i])}
            else:
                nearest = int(per_pair["nearest"][i])
                record |= {"hit": bool(scores[i]), "nearest": examples.pairs[nearest]}
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def warn_if_one_class(metrics: dict, labels: list[str], examples: int) -> None:
    """A classifier that answers one class for every dev example has learned only how common
    the labels are: say so, with what usually helps."""
    predicted = [sum(column) for column in zip(*metrics.get("confusion_matrix", []))]
    used = [label for label, count in zip(labels, predicted) if count]
    if len(used) == 1 and len(labels) > 1 and examples > 1:
        log.warning(
            f"warning: the model predicts {used[0]!r} for all {examples:,} dev examples: it has "
            "learned only how common the labels are; try more --epochs, another --lr or more data"
        )


def run_facts(data: TrainingData, device, dtype) -> dict:
    """What results.json says about the data and the hardware of any run."""
    return {
        "train_examples": len(data.train),
        "dev_examples": len(data.dev),
        "device": str(device),
        "precision": precision_name(dtype),
    }


def write_outputs(output: Path, summary: dict) -> None:
    write_model_card(output, summary)
    write_json(output / RESULTS, summary)  # its presence marks a finished run


def load_finished(output: Path):
    """A finished run: a classifier ``Run``, or the bi-encoder's ``Embedder``."""
    if is_embedding_run(output):
        return load_embedder(str(output))
    return load(output)


def write_dev_predictions(output: Path, examples: Examples, probabilities, labels) -> None:
    """One line per dev example: text, gold label, prediction, probabilities (for the report)."""
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


def precision_name(dtype: torch.dtype | None) -> str:
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
