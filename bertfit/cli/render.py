"""Every text that a command prints for people (JSON output is written as it is)."""

from __future__ import annotations

from bertfit.evaluation.metrics import headline


def prediction_text(record: dict) -> str:
    """One prediction: its score, its labels or its label, with the probabilities."""
    if "score" in record:
        return f"score: {record['score']:.4f}\n"
    probs = ", ".join(f"{label} {p:.4f}" for label, p in record["probabilities"].items())
    if "labels" in record:
        first = f"labels: {', '.join(map(str, record['labels'])) or '(none)'}"
    else:
        first = f"label: {record['label']}"
    return f"{first}\nprobabilities: {probs}\n"


def quickstart_text(summary: dict) -> str:
    out = [
        f"\nfine-tuned model: {summary['run_dir']}",
        "dev set of the sample (SST-2 dev, 872 sentences):",
        metrics_table(summary["metrics"]),
        "",
        "predictions:",
    ]
    for sentence, record in summary["predictions"]:
        label = str(record["label"])
        confidence = record["probabilities"][label]
        out.append(f"  {label:<8} ({confidence:.3f})  {sentence}")
    return "\n".join(out) + "\n"


def tasks_text(records: list[dict]) -> str:
    lines = []
    for r in records:
        rows = ", ".join(f"{split} {n:,}" for split, n in r["rows"].items())
        kind = r["problem"] if r["labels"] is None else f"labels: {', '.join(r['labels'])}"
        where = (
            "found: " + r["found"]
            if r["found"]
            else "not here yet; looked in " + ", ".join(r["looked_for"])
        )
        lines += [
            f"{r['task']:<7} {r['title']}",
            f"        {kind}; metrics: {', '.join(r['metrics'])}; rows: {rows}",
            f"        download {r['download_bytes'] / 1e6:.1f} MB; licence: {r['licence']}",
            f"        {where}",
        ]
    return "\n".join(lines) + "\n"


def search_text(records: list[dict]) -> str:
    lines = []
    for record in records:
        lines.append(f"query: {record['query']}")
        lines += [f"  {h['rank']:>3}. {h['score']:.4f}  {h['text']}" for h in record["hits"]]
    return "\n".join(lines) + "\n"


def explanation_text(result: dict) -> str:
    probs = ", ".join(f"{label} {p:.4f}" for label, p in result["probabilities"].items())
    lines = [
        f"label: {result['label']}",
        f"probabilities: {probs}",
        "",
        f"word            attention  integrated gradients ({result['attribution_target']})",
    ]
    lines += [
        f"{w['word']:<15} {w['attention']:9.3f}  {w['integrated_gradients']:+.3f}"
        for w in result["words"]
    ]
    quantity = f"the {result['target_output']} of {str(result['target_label'])!r}"
    lines.append(
        f"\nintegrated gradients sum to {result['attribution_sum']:+.4f}; {quantity} moved "
        f"{result['output_difference']:+.4f} from the {result['baseline']} baseline "
        f"({result['baseline_output']:+.4f}) to this text ({result['output']:+.4f}); "
        f"a {result['target_output']}, not a probability"
    )
    return "\n".join(lines) + "\n"


def comparison_text(out: dict) -> str:
    lines = [
        f"{t['a']} minus {t['b']}: {t['metric']} {t['difference']:+.4f} "
        f"(95% CI {t['ci'][0]:+.4f} to {t['ci'][1]:+.4f}), p = {t['p_value']:.4f}, n = {t['n']}"
        for t in out.get("paired", [])
    ]
    notes = [f"note: {note}" for note in out.get("notes", [])]
    return "\n".join([*notes, *lines, f"wrote {out['page']}"]) + "\n"


def metrics_table(metrics: dict) -> str:
    """A plain-text table for people: headline metrics, per-class figures, confusion matrix."""
    lines = [f"examples: {metrics['n']}"]
    ci = metrics.get("ci", {})
    lines += [
        f"{name}: {value:.4f}"
        + (f"  (95% CI {ci[name][0]:.4f} to {ci[name][1]:.4f})" if name in ci else "")
        for name, value in headline(metrics).items()
    ]
    if "labels" not in metrics:  # regression: the correlations are the whole story
        return "\n".join(lines)
    labels = metrics["labels"]
    width = max(8, *(len(label) for label in labels))
    lines.append("")
    lines.append(f"{'label':<{width}}  precision  recall     f1  support")
    for label in labels:
        row = metrics["per_class"][label]
        lines.append(
            f"{label:<{width}}  {row['precision']:9.4f}  {row['recall']:6.4f}  {row['f1']:.4f}  {row['support']:7d}"
        )
    if "confusion_matrix" not in metrics:
        return "\n".join(lines)
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
