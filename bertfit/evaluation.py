"""Classification metrics: accuracy, macro-F1, MCC, per-class precision/recall/F1, confusion matrix."""

from __future__ import annotations

import math

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_labels: int) -> np.ndarray:
    """Rows are true labels, columns predicted labels."""
    matrix = np.zeros((num_labels, num_labels), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def matthews_corrcoef(matrix: np.ndarray) -> float:
    """Multi-class MCC (Gorodkin's R_K) from a confusion matrix; 0 when undefined."""
    total = matrix.sum()
    correct = np.trace(matrix)
    pred = matrix.sum(axis=0).astype(float)
    true = matrix.sum(axis=1).astype(float)
    cov_tp = correct * total - pred @ true
    denom = math.sqrt((total**2 - pred @ pred) * (total**2 - true @ true))
    return float(cov_tp / denom) if denom else 0.0


def classification_metrics(y_true, y_pred, labels: list[str]) -> dict:
    """Every figure ``bertfit evaluate`` reports; metric names at the top level, detail below.

    Example: ``classification_metrics([0, 1, 1], [0, 1, 0], ["neg", "pos"])["accuracy"] == 2 / 3``.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    matrix = confusion_matrix(y_true, y_pred, len(labels))
    tp = np.diag(matrix).astype(float)
    predicted = matrix.sum(axis=0)
    support = matrix.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    f1 = np.divide(
        2 * precision * recall,
        precision + recall,
        out=np.zeros_like(tp),
        where=(precision + recall) > 0,
    )
    present = support > 0  # a label absent from this file would drag macro-F1 to 0 for nothing
    metrics = {
        "accuracy": float(tp.sum() / max(1, len(y_true))),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "mcc": matthews_corrcoef(matrix),
    }
    if len(labels) == 2:
        metrics["f1"] = float(f1[1])  # the second label is the positive class, as in GLUE
    metrics["n"] = int(len(y_true))
    metrics["per_class"] = {
        label: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, label in enumerate(labels)
    }
    metrics["labels"] = list(labels)
    metrics["confusion_matrix"] = matrix.tolist()
    return metrics


def headline(metrics: dict) -> dict:
    """Only the numeric top-level metrics (what goes into metrics.jsonl and the epoch line)."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and k != "n"}


def format_report(metrics: dict) -> str:
    """A plain-text table for people: headline metrics, per-class figures, confusion matrix."""
    lines = [f"examples: {metrics['n']}"]
    lines += [f"{name}: {value:.4f}" for name, value in headline(metrics).items()]
    labels = metrics["labels"]
    width = max(8, *(len(label) for label in labels))
    lines.append("")
    lines.append(f"{'label':<{width}}  precision  recall     f1  support")
    for label in labels:
        row = metrics["per_class"][label]
        lines.append(
            f"{label:<{width}}  {row['precision']:9.4f}  {row['recall']:6.4f}  {row['f1']:.4f}  {row['support']:7d}"
        )
    lines.append("")
    lines.append("confusion matrix (rows: true, columns: predicted)")
    cell = max(
        6,
        *(len(label) for label in labels),
        *(len(str(c)) for r in metrics["confusion_matrix"] for c in r),
    )
    lines.append(" " * width + "  " + " ".join(f"{label:>{cell}}" for label in labels))
    for label, row in zip(labels, metrics["confusion_matrix"]):
        lines.append(f"{label:<{width}}  " + " ".join(f"{count:>{cell}}" for count in row))
    return "\n".join(lines)
