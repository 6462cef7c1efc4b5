"""The run report: ``report.html`` and its PNGs, rebuilt from a run directory's own files.

Curves (loss per step, train and dev metric per evaluation, learning rate, throughput), the dev
confusion matrix as a heatmap, per-class precision/recall/F1, calibration (reliability diagram
and expected calibration error) and the most confidently wrong dev examples. Everything comes
from ``steps.jsonl``, ``metrics.jsonl``, ``results.json`` and ``dev_predictions.jsonl``, so
``bertfit report RUN`` can rebuild it at any time.
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path

from bertfit.files import write_text
from bertfit.report.plots import read_jsonl, run_plots
from bertfit.rundir import (
    DEV_PREDICTIONS,
    METRICS,
    REPORT,
    RUN_CONFIG,
    STEPS,
    is_finished,
    read_results,
)


def build_report(run_dir: str | Path) -> Path:
    """Write ``report.html`` and its PNGs into ``run_dir``; returns the page's path."""
    run = Path(run_dir)
    meta = json.loads((run / RUN_CONFIG).read_text(encoding="utf-8"))
    results = read_results(run) if is_finished(run) else {}
    steps, evals = read_jsonl(run / STEPS), read_jsonl(run / METRICS)
    predictions = read_jsonl(run / DEV_PREDICTIONS)
    labels = meta.get("labels", [])
    plots = run_plots(run, steps, evals, results, predictions, labels)
    dev, ci = results.get("dev", {}), results.get("dev_ci", {})
    headline = "".join(
        f"<tr><td>{escape(k)}</td><td>{v:.4f}</td><td>{'' if k not in ci else f'{ci[k][0]:.4f} to {ci[k][1]:.4f}'}</td></tr>"
        for k, v in dev.items()
        if isinstance(v, float)
    )
    per_class = "".join(
        f"<tr><td>{escape(str(label))}</td><td>{row['precision']:.4f}</td><td>{row['recall']:.4f}</td><td>{row['f1']:.4f}</td><td>{row['support']}</td></tr>"
        for label, row in dev.get("per_class", {}).items()
    )
    wrong = sorted(
        (p for p in predictions if str(p["predicted"]) != str(p["label"])),
        key=lambda p: -max(p["probabilities"]),
    )[:20]
    wrong_rows = "".join(
        f"<tr><td>{escape(p['text'])}{'' if p.get('pair') is None else ' ‖ ' + escape(p['pair'])}</td>"
        f"<td>{escape(str(p['label']))}</td><td>{escape(str(p['predicted']))}</td><td>{max(p['probabilities']):.3f}</td></tr>"
        for p in wrong
    )
    figures = "".join(
        f'<figure><img src="{name}" alt="{escape(caption)}"><figcaption>{escape(caption)}</figcaption></figure>'
        for name, caption in plots.items()
    )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>bertfit report: {escape(run.resolve().name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; max-width: 70em; color: #222 }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em }}
td, th {{ border-bottom: 1px solid #ddd; padding: 0.2em 0.7em; text-align: left }}
figure {{ display: inline-block; margin: 0 1em 1em 0 }} img {{ max-width: 34em }}
</style></head><body>
<h1>{escape(run.resolve().name)}</h1>
<p>{escape(meta["encoder"]["name"])} fine-tuned on {escape(str(meta.get("task") or meta["config"].get("train")))};
best {escape(str(results.get("metric", "")))} at epoch {results.get("best_epoch", "?")}, {results.get("train_examples", "?")} training and
{results.get("dev_examples", "?")} dev examples.</p>
<h2 id="metrics">Dev metrics (95% bootstrap intervals)</h2>
<table><tr><th>metric</th><th>value</th><th>95% interval</th></tr>{headline}</table>
<h2 id="plots">Curves, confusion matrix, calibration</h2>
{figures}
<h2 id="per-class">Per class</h2>
<table><tr><th>label</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>{per_class}</table>
<h2 id="wrong">The {len(wrong)} most confidently wrong dev examples</h2>
<table><tr><th>text</th><th>true</th><th>predicted</th><th>confidence</th></tr>{wrong_rows}</table>
</body></html>
"""
    write_text(run / REPORT, page)
    return run / REPORT
