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

import numpy as np

from bertfit.files import save_file_atomic, write_text


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


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [
        # split at "\n" only: a text may hold U+2028 or U+0085, which splitlines() breaks at
        json.loads(line)
        for line in path.read_text(encoding="utf-8").split("\n")
        if line.strip()
    ]


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()  # keep axis labels inside the image
    save_file_atomic(lambda tmp: fig.savefig(tmp, format="png", dpi=110), path)
    plt.close(fig)


def _plots(run: Path, steps, evals, results, predictions, labels) -> dict[str, str]:
    """Write the PNGs; returns {name: caption} for those written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = {}
    if steps:
        for key, name, ylabel in (
            ("loss", "loss.png", "training loss"),
            ("lr", "learning_rate.png", "learning rate"),
            ("examples_per_second", "throughput.png", "examples / s (epoch so far)"),
        ):
            fig, ax = plt.subplots(figsize=(6, 3.2))
            ax.plot([s["step"] for s in steps], [s[key] for s in steps], color="#3c64dc")
            ax.set_xlabel("optimizer step")
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
            _save(fig, run / name)
            written[name] = f"{ylabel} per step"
    metric = results.get("metric", "accuracy")
    if evals:
        fig, ax = plt.subplots(figsize=(6, 3.2))
        x = [e["step"] for e in evals]
        if all("train_accuracy" in e for e in evals):
            ax.plot(x, [e["train_accuracy"] for e in evals], "o-", label="train accuracy")
        ax.plot(x, [e["dev"].get(metric, np.nan) for e in evals], "s-", label=f"dev {metric}")
        ax.set_xlabel("optimizer step")
        ax.legend()
        ax.grid(alpha=0.3)
        _save(fig, run / "metrics.png")
        written["metrics.png"] = f"train accuracy and dev {metric} at each evaluation"
    matrix = results.get("dev", {}).get("confusion_matrix")
    if matrix:
        matrix = np.asarray(matrix)
        fig, ax = plt.subplots(figsize=(1.2 + 0.6 * len(labels), 1 + 0.6 * len(labels)))
        ax.imshow(matrix, cmap="Blues")
        for (i, j), count in np.ndenumerate(matrix):
            ax.text(
                j,
                i,
                str(count),
                ha="center",
                va="center",
                color="white" if count > matrix.max() / 2 else "black",
            )
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        fig.tight_layout()
        _save(fig, run / "confusion.png")
        written["confusion.png"] = "dev confusion matrix (rows: true labels)"
    if predictions:
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
        _save(fig, run / "calibration.png")
        written["calibration.png"] = f"reliability diagram, expected calibration error {ece:.4f}"
    return written


def build_report(run_dir: str | Path) -> Path:
    """Write ``report.html`` and its PNGs into ``run_dir``; returns the page's path."""
    run = Path(run_dir)
    meta = json.loads((run / "bertfit.json").read_text(encoding="utf-8"))
    results = (
        json.loads((run / "results.json").read_text(encoding="utf-8"))
        if (run / "results.json").is_file()
        else {}
    )
    steps, evals = _read_jsonl(run / "steps.jsonl"), _read_jsonl(run / "metrics.jsonl")
    predictions = _read_jsonl(run / "dev_predictions.jsonl")
    labels = meta.get("labels", [])
    plots = _plots(run, steps, evals, results, predictions, labels)
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
    write_text(run / "report.html", page)
    return run / "report.html"


def compare_runs(config) -> dict:
    """Metrics of each run (from its results), and, given data, a paired test of each run
    against the first on the same examples; writes the comparison page."""
    from bertfit.config.commands import EvaluateConfig
    from bertfit.data.labels import label_targets
    from bertfit.errors import ConfigError
    from bertfit.evaluation.metrics import paired_bootstrap, score_outputs
    from bertfit.serve.commands import evaluation_examples
    from bertfit.serve.run import load

    config.validate()
    runs = [Path(r) for r in config.runs]
    results = {}
    for run in runs:
        if not (run / "results.json").is_file():
            raise ConfigError(f"{run}: not a finished bertfit run (no results.json)")
        results[str(run)] = json.loads((run / "results.json").read_text(encoding="utf-8"))
    out = {"runs": [str(r) for r in runs], "dev": {k: v.get("dev", {}) for k, v in results.items()}}
    if config.data or config.task:
        loaded = [load(r, config.device) for r in runs]
        problem = loaded[0].problem
        if any(r.problem != problem or r.labels != loaded[0].labels for r in loaded):
            raise ConfigError("the runs predict different things (labels or problem differ)")
        evaluate = EvaluateConfig(
            run_dir=str(runs[0]),
            data=config.data,
            task=config.task,
            split=config.split,
            data_dir=config.data_dir,
        )
        examples = evaluation_examples(evaluate, loaded[0])
        kind = {"regression": "score"}.get(problem, "single")
        targets = label_targets(examples.labels, loaded[0].labels, kind)
        outputs = [r.logits(examples.texts, examples.pairs) for r in loaded]
        metric = results[str(runs[0])].get("metric", "accuracy")
        scorer = lambda o: lambda i: score_outputs(problem, targets[i], o[i], loaded[0].labels)  # noqa: E731
        out["paired"] = [
            {
                "a": str(runs[k]),
                "b": str(runs[0]),
                **paired_bootstrap(scorer(outputs[k]), scorer(outputs[0]), len(targets), metric),
            }
            for k in range(1, len(runs))
        ]
    out["page"] = str(_write_compare_page(Path(config.output), runs, results, out))
    return out


def _write_compare_page(page: Path, runs: list[Path], results: dict, out: dict) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stem = page.with_suffix("")
    figures = []
    for source, key, name in (("steps.jsonl", "loss", "loss"), ("metrics.jsonl", "dev", "dev")):
        fig, ax = plt.subplots(figsize=(6, 3.2))
        for run in runs:
            rows = _read_jsonl(run / source)
            metric = results[str(run)].get("metric", "accuracy")
            ys = [r[key][metric] if key == "dev" else r[key] for r in rows]
            ax.plot([r["step"] for r in rows], ys, "o-" if key == "dev" else "-", label=run.name)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("training loss" if key == "loss" else "dev metric")
        ax.legend()
        ax.grid(alpha=0.3)
        path = stem.with_name(f"{stem.name}_{name}.png")
        _save(fig, path)
        figures.append(path.name)
    names = sorted(
        {k for dev in out["dev"].values() for k, v in dev.items() if isinstance(v, float)}
    )
    head = "".join(f"<th>{escape(r.name)}</th>" for r in runs)
    rows = "".join(
        f"<tr><td>{escape(n)}</td>"
        + "".join(
            f"<td>{out['dev'][str(r)].get(n, float('nan')):.4f}"
            + (
                f" ({c[0]:.4f} to {c[1]:.4f})"
                if (c := results[str(r)].get("dev_ci", {}).get(n))
                else ""
            )
            + "</td>"
            for r in runs
        )
        + "</tr>"
        for n in names
    )
    paired = "".join(
        f"<tr><td>{escape(Path(p['a']).name)} minus {escape(Path(p['b']).name)}</td><td>{escape(p['metric'])}</td>"
        f"<td>{p['difference']:+.4f}</td><td>{p['ci'][0]:+.4f} to {p['ci'][1]:+.4f}</td><td>{p['p_value']:.4f}</td><td>{p['n']}</td></tr>"
        for p in out.get("paired", [])
    )
    paired_table = (
        '<h2 id="paired">Paired bootstrap test on the same examples</h2><table><tr><th>runs</th>'
        f"<th>metric</th><th>difference</th><th>95% interval</th><th>p-value</th><th>n</th></tr>{paired}</table>"
        if paired
        else "<p>Give --data or --task for a paired test on the same examples.</p>"
    )
    imgs = "".join(f'<figure><img src="{n}" alt="{n}"></figure>' for n in figures)
    write_text(
        page,
        f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>bertfit comparison</title>
<style>body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222 }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em }} td, th {{ border-bottom: 1px solid #ddd; padding: 0.2em 0.7em }}
figure {{ display: inline-block; margin: 0 1em 1em 0 }}</style></head><body>
<h1>Comparison of {len(runs)} runs</h1>
<h2 id="metrics">Dev metrics (95% bootstrap intervals)</h2>
<table><tr><th>metric</th>{head}</tr>{rows}</table>
{paired_table}
<h2 id="curves">Curves</h2>{imgs}
</body></html>
""",
    )
    return page
