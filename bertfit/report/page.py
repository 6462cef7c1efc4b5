"""The run report: ``report.html`` and its PNGs, rebuilt from a run directory's own files.

Curves (loss per step, train and dev metric per evaluation, learning rate, throughput) and the
dev metrics with 95% bootstrap intervals, then what fits the run: for a classifier (and a
bi-encoder trained with the softmax objective) the dev confusion matrix as a heatmap,
per-class precision/recall/F1, calibration (reliability diagram and expected calibration
error) and the most confidently wrong dev examples; for a cosine bi-encoder predicted against
gold scores and the pairs it misjudges most; for a contrastive one the dev texts whose own
positive was not the nearest. Everything comes from ``steps.jsonl``, ``metrics.jsonl``,
``results.json`` and ``dev_predictions.jsonl``, so ``bertfit report RUN`` can rebuild it at
any time.
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path

from bertfit.files import write_text
from bertfit.report.plots import read_jsonl, run_plots
from bertfit.rundir import (
    DEV_PREDICTIONS,
    EMBEDDING,
    METRICS,
    REPORT,
    RUN_CONFIG,
    STEPS,
    is_finished,
    read_results,
)

WORST = 20  # examples listed in the report's tables of mistakes


def build_report(run_dir: str | Path) -> Path:
    """Write ``report.html`` and its PNGs into ``run_dir``; returns the page's path."""
    run = Path(run_dir)
    meta = json.loads((run / RUN_CONFIG).read_text(encoding="utf-8"))
    results = read_results(run) if is_finished(run) else {}
    steps, evals = read_jsonl(run / STEPS), read_jsonl(run / METRICS)
    predictions = read_jsonl(run / DEV_PREDICTIONS)
    plots = run_plots(run, steps, evals, results, predictions, meta.get("labels", []))
    objective = meta.get("objective") if meta.get("problem") == EMBEDDING else None
    if objective == "cosine":
        sections = cosine_sections(predictions, meta.get("score_range"))
    elif objective == "contrastive":
        sections = contrastive_sections(predictions)
    else:
        sections = classifier_sections(results.get("dev", {}), predictions)
    figures = "".join(
        f'<figure><img src="{name}" alt="{escape(caption)}"><figcaption>{escape(caption)}</figcaption></figure>'
        for name, caption in plots.items()
    )
    plots_title = "Curves and dev scores" if objective else "Curves, confusion matrix, calibration"
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>bertfit report: {escape(run.resolve().name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; max-width: 70em; color: #222 }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em }}
td, th {{ border-bottom: 1px solid #ddd; padding: 0.2em 0.7em; text-align: left }}
figure {{ display: inline-block; margin: 0 1em 1em 0 }} img {{ max-width: 34em }}
</style></head><body>
<h1>{escape(run.resolve().name)}</h1>
<p>{summary_line(meta, results, objective)}</p>
<h2 id="metrics">Dev metrics (95% bootstrap intervals)</h2>
{metrics_table(results)}
<h2 id="plots">{plots_title}</h2>
{figures}
{sections}
</body></html>
"""
    write_text(run / REPORT, page)
    return run / REPORT


def summary_line(meta: dict, results: dict, objective: str | None) -> str:
    """What was trained on what, and where the best model came from."""
    data = escape(str(meta.get("task") or meta["config"].get("train")))
    how = "fine-tuned" if objective is None else f"trained as a bi-encoder ({objective} objective)"
    unit = "examples" if objective is None else "pairs"
    return (
        f"{escape(meta['encoder']['name'])} {how} on {data};\n"
        f"best {escape(str(results.get('metric', '')))} at epoch {results.get('best_epoch', '?')}, "
        f"{results.get('train_examples', '?')} training and\n"
        f"{results.get('dev_examples', '?')} dev {unit}."
    )


def metrics_table(results: dict) -> str:
    """The dev metrics, each with its interval."""
    dev, ci = results.get("dev", {}), results.get("dev_ci", {})
    rows = "".join(
        f"<tr><td>{escape(k)}</td><td>{v:.4f}</td><td>{'' if k not in ci else f'{ci[k][0]:.4f} to {ci[k][1]:.4f}'}</td></tr>"
        for k, v in dev.items()
        if isinstance(v, float)
    )
    return f"<table><tr><th>metric</th><th>value</th><th>95% interval</th></tr>{rows}</table>"


def _pair_text(p: dict) -> str:
    return escape(p["text"]) + ("" if p.get("pair") is None else " ‖ " + escape(p["pair"]))


def classifier_sections(dev: dict, predictions: list[dict]) -> str:
    """Per-class figures and the most confidently wrong dev examples."""
    per_class = "".join(
        f"<tr><td>{escape(str(label))}</td><td>{row['precision']:.4f}</td><td>{row['recall']:.4f}</td><td>{row['f1']:.4f}</td><td>{row['support']}</td></tr>"
        for label, row in dev.get("per_class", {}).items()
    )
    wrong = sorted(
        (p for p in predictions if str(p["predicted"]) != str(p["label"])),
        key=lambda p: -max(p["probabilities"]),
    )[:WORST]
    wrong_rows = "".join(
        f"<tr><td>{_pair_text(p)}</td>"
        f"<td>{escape(str(p['label']))}</td><td>{escape(str(p['predicted']))}</td><td>{max(p['probabilities']):.3f}</td></tr>"
        for p in wrong
    )
    return f"""<h2 id="per-class">Per class</h2>
<table><tr><th>label</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>{per_class}</table>
<h2 id="wrong">The {len(wrong)} most confidently wrong dev examples</h2>
<table><tr><th>text</th><th>true</th><th>predicted</th><th>confidence</th></tr>{wrong_rows}</table>"""


def cosine_sections(predictions: list[dict], score_range: list[float] | None) -> str:
    """The dev pairs whose cosine is farthest from their gold score scaled to [0, 1] (what the
    cosine objective trains it toward)."""
    low, high = score_range or (0.0, 1.0)

    def target(p: dict) -> float:
        return (p["label"] - low) / max(high - low, 1e-12)

    worst = sorted(predictions, key=lambda p: -abs(p["predicted"] - target(p)))[:WORST]
    rows = "".join(
        f"<tr><td>{_pair_text(p)}</td><td>{p['label']:g}</td><td>{target(p):.3f}</td>"
        f"<td>{p['predicted']:.3f}</td></tr>"
        for p in worst
    )
    return f"""<h2 id="farthest">The {len(worst)} dev pairs farthest from their gold score</h2>
<table><tr><th>texts</th><th>gold</th><th>gold scaled to [0, 1]</th><th>cosine</th></tr>{rows}</table>"""


def contrastive_sections(predictions: list[dict]) -> str:
    """The dev texts for which another pair's positive came nearer than their own."""
    missed = [p for p in predictions if not p.get("hit", True)][:WORST]
    rows = "".join(
        f"<tr><td>{escape(p['text'])}</td><td>{escape(p['pair'])}</td><td>{escape(p['nearest'])}</td></tr>"
        for p in missed
    )
    total = sum(not p.get("hit", True) for p in predictions)
    return f"""<h2 id="missed">Dev texts whose own positive was not the nearest ({len(missed)} of {total} shown)</h2>
<table><tr><th>text</th><th>its positive</th><th>nearest positive</th></tr>{rows}</table>"""
