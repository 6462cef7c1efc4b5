"""The run report's figures: loss, learning rate, throughput, metric curves, confusion matrix, a
reliability diagram and (for a cosine bi-encoder) predicted against gold scores, each a PNG beside
the page."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bertfit.files import save_file_atomic
from bertfit.rundir import PLOTS

SCATTER = "scatter.png"  # a bi-encoder's predicted cosine against the gold score


def expected_calibration_error(confidence, correct, bins: int = 10) -> tuple[float, list[dict]]:
    """ECE over equal-width confidence bins, and the bins (for the reliability diagram)."""
    confidence, correct = np.asarray(confidence, dtype=float), np.asarray(correct, dtype=float)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        members = which == b
        if not members.any():
            continue
        conf, acc = float(confidence[members].mean()), float(correct[members].mean())
        ece += members.mean() * abs(acc - conf)
        table.append(
            {
                "low": float(edges[b]),
                "high": float(edges[b + 1]),
                "n": int(members.sum()),
                "confidence": conf,
                "accuracy": acc,
            }
        )
    return float(ece), table


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [
        # split at "\n" only: a text may hold U+2028 or U+0085, which splitlines() breaks at
        json.loads(line)
        for line in path.read_text(encoding="utf-8").split("\n")
        if line.strip()
    ]


def save_figure(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()  # keep axis labels inside the image
    save_file_atomic(lambda tmp: fig.savefig(tmp, format="png", dpi=110), path)
    plt.close(fig)


def run_plots(run: Path, steps, evals, results, predictions, labels) -> dict[str, str]:
    """Write the PNGs; returns {file name: caption} for those written."""
    import matplotlib

    matplotlib.use("Agg")
    written = curve_plots(run, steps, evals, results.get("metric", "accuracy"))
    matrix = results.get("dev", {}).get("confusion_matrix")
    if matrix:
        written |= confusion_plot(run, np.asarray(matrix), labels)
    if predictions and "probabilities" in predictions[0]:  # classes: how far to trust them
        written |= calibration_plot(run, predictions)
    elif predictions and "predicted" in predictions[0]:  # scores (a cosine bi-encoder)
        written |= scatter_plot(run, predictions, results.get("dev", {}))
    return written


def curve_plots(run: Path, steps: list[dict], evals: list[dict], metric: str) -> dict[str, str]:
    import matplotlib.pyplot as plt

    written = {}
    for key, name, ylabel in (
        ("loss", PLOTS["loss"], "training loss"),
        ("lr", PLOTS["learning_rate"], "learning rate"),
        ("examples_per_second", PLOTS["throughput"], "examples / s (epoch so far)"),
    ):
        if not steps:
            break
        fig, ax = plt.subplots(figsize=(6, 3.2))
        ax.plot([s["step"] for s in steps], [s[key] for s in steps], color="#3c64dc")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        save_figure(fig, run / name)
        written[name] = f"{ylabel} per step"
    if evals:
        fig, ax = plt.subplots(figsize=(6, 3.2))
        x = [e["step"] for e in evals]
        if all("train_accuracy" in e for e in evals):
            ax.plot(x, [e["train_accuracy"] for e in evals], "o-", label="train accuracy")
        ax.plot(x, [e["dev"].get(metric, np.nan) for e in evals], "s-", label=f"dev {metric}")
        ax.set_xlabel("optimizer step")
        ax.legend()
        ax.grid(alpha=0.3)
        save_figure(fig, run / PLOTS["metrics"])
        train = "train accuracy and " if all("train_accuracy" in e for e in evals) else ""
        written[PLOTS["metrics"]] = f"{train}dev {metric} at each evaluation"
    return written


def confusion_plot(run: Path, matrix: np.ndarray, labels: list[str]) -> dict[str, str]:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.2 + 0.6 * len(labels), 1 + 0.6 * len(labels)))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), count in np.ndenumerate(matrix):
        colour = "white" if count > matrix.max() / 2 else "black"
        ax.text(j, i, str(count), ha="center", va="center", color=colour)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.tight_layout()
    save_figure(fig, run / PLOTS["confusion"])
    return {PLOTS["confusion"]: "dev confusion matrix (rows: true labels)"}


def calibration_plot(run: Path, predictions: list[dict]) -> dict[str, str]:
    import matplotlib.pyplot as plt

    confidence = [max(p["probabilities"]) for p in predictions]
    correct = [str(p["predicted"]) == str(p["label"]) for p in predictions]
    ece, table = expected_calibration_error(confidence, correct)
    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    ax.plot([0, 1], [0, 1], "--", color="#888", label="perfect calibration")
    ax.bar(
        [(b["low"] + b["high"]) / 2 for b in table],
        [b["accuracy"] for b in table],
        width=0.09,
        color="#3c64dc",
        alpha=0.8,
        label="accuracy in bin",
    )
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(f"reliability (ECE {ece:.3f})")
    ax.legend(loc="upper left")
    save_figure(fig, run / PLOTS["calibration"])
    return {PLOTS["calibration"]: f"reliability diagram, expected calibration error {ece:.4f}"}


def scatter_plot(run: Path, predictions: list[dict], dev: dict) -> dict[str, str]:
    """Predicted score (a bi-encoder's cosine) against the gold score, one point per dev pair."""
    import matplotlib.pyplot as plt

    gold = [p["label"] for p in predictions]
    predicted = [p["predicted"] for p in predictions]
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    ax.scatter(gold, predicted, s=10, alpha=0.5, color="#3c64dc", edgecolors="none")
    ax.set_xlabel("gold score")
    ax.set_ylabel("predicted cosine similarity")
    ax.grid(alpha=0.3)
    figures = ", ".join(f"{k} {dev[k]:.3f}" for k in ("spearman", "pearson") if k in dev)
    ax.set_title(f"dev ({figures})" if figures else "dev")
    save_figure(fig, run / SCATTER)
    detail = f" ({figures})" if figures else ""
    return {SCATTER: f"predicted cosine against gold score, {len(gold)} dev pairs{detail}"}
