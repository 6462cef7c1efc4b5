"""The model card: ``README.md`` in a run directory, in the Hugging Face model-card format.

YAML front matter (base model, pipeline tag, datasets, license, metrics with values in
``model-index``) and then what a reader needs: intended use, training data, hyper-parameters,
results with 95% bootstrap intervals, limitations. The folder can be published as it is.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from bertfit.files import write_text

PIPELINE = {
    "single_label_classification": "text-classification",
    "multi_label_classification": "text-classification",
    "regression": "text-classification",
    "embedding": "sentence-similarity",
}
HYPER = (
    "epochs",
    "batch_size",
    "lr",
    "layer_lr_decay",
    "warmup_ratio",
    "weight_decay",
    "max_length",
    "truncation",
    "objective",
    "pooling",
    "seed",
)


def base_license(encoder_path: str) -> str:
    """The encoder's licence from its own model card's front matter, else ``other``."""
    card = Path(encoder_path) / "README.md"
    try:
        head = card.read_text(encoding="utf-8").split("---")[1] if card.is_file() else ""
    except (OSError, IndexError):
        head = ""
    match = re.search(r"^license:\s*(\S+)", head, flags=re.MULTILINE)
    return match.group(1) if match else "other"


def _yaml_str(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a valid YAML scalar


def _metric_rows(metrics: dict, ci: dict) -> list[tuple[str, float, list | None]]:
    return [
        (name, value, ci.get(name))
        for name, value in metrics.items()
        if isinstance(value, float) and name != "mse"
    ]


def model_card(meta: dict, results: dict, run_name: str) -> str:
    """The card's text for a finished run (``bertfit.json`` and ``results.json`` contents)."""
    config, problem = meta["config"], meta.get("problem", "single_label_classification")
    base = meta["encoder"]["name"]
    data = meta.get("task") or Path(config.get("train") or "data").name
    dev_rows = _metric_rows(results.get("dev", {}), results.get("dev_ci", {}))
    front = [
        "---",
        f"base_model: {_yaml_str(base)}",
        f"pipeline_tag: {PIPELINE.get(problem, 'text-classification')}",
        f"library_name: {'sentence-transformers' if problem == 'embedding' else 'transformers'}",
        f"license: {base_license(meta['encoder']['path'])}",
        f"datasets:\n- {_yaml_str(data)}",
        "tags:\n- bertfit",
        "metrics:",
        *[f"- {name}" for name, _, _ in dev_rows],
        "model-index:",
        f"- name: {_yaml_str(run_name)}",
        "  results:",
        f"  - task:\n      type: {PIPELINE.get(problem, 'text-classification')}",
        f"    dataset:\n      name: {_yaml_str(data)}\n      type: {_yaml_str(data)}\n      split: dev",
        "    metrics:",
        *[f"    - type: {name}\n      value: {value:.4f}" for name, value, _ in dev_rows],
        "---",
    ]
    kind = {
        "single_label_classification": f"classifies texts into {', '.join(meta['labels'])}",
        "multi_label_classification": f"tags texts with any of {', '.join(meta['labels'])}",
        "regression": "predicts a similarity or rating score",
        "embedding": "embeds sentences as vectors compared by cosine similarity",
    }.get(problem, "classifies texts")
    pair = " (text pairs)" if meta["columns"].get("pair") else ""
    body = [
        f"# {run_name}",
        "",
        f"A fine-tuned `{base}` that {kind}{pair}, trained with bertfit {results.get('version', '')}.",
        "",
        "## Intended use",
        "",
        f"Inputs like the training data ({data}): English text, at most "
        f"{config['max_length']} tokens (longer inputs are cut, `{config['truncation']}`). "
        + (
            "Use `bertfit similarity/embed/search RUN`, or `SentenceTransformer(RUN)`."
            if problem == "embedding"
            else "Use `bertfit predict RUN --text ...`, or "
            "`AutoModelForSequenceClassification.from_pretrained(RUN)`."
        ),
        "",
        "## Training data",
        "",
        f"{data}: {results.get('train_examples', '?')} training and "
        f"{results.get('dev_examples', '?')} dev examples"
        + (
            f"; test split `{results['test_split']}`."
            if results.get("test_split")
            else " (no labelled test split)."
        ),
        "",
        "## Hyper-parameters",
        "",
        "| name | value |",
        "|---|---|",
        *[f"| {k} | {config[k]} |" for k in HYPER if config.get(k) is not None],
        f"| precision | {results.get('precision', 'auto')} |",
        "",
        "## Results (95% bootstrap intervals, 1,000 resamples)",
        "",
        "| split | metric | value | 95% interval |",
        "|---|---|---|---|",
    ]
    for split in ("dev", "test"):
        for name, value, ci in _metric_rows(results.get(split, {}), results.get(f"{split}_ci", {})):
            interval = f"{ci[0]:.4f} to {ci[1]:.4f}" if ci else ""
            body.append(f"| {split} | {name} | {value:.4f} | {interval} |")
    body += [
        "",
        "## Limitations",
        "",
        f"- Judged on {results.get('dev_examples', '?')} dev examples: the intervals above are "
        "the honest size of that uncertainty; expect lower figures on text unlike the training data.",
        "- Inherits the biases of the base model and of the training data.",
        "- The dev set also picked the best epoch, so dev figures are slightly optimistic; "
        "a test split, where shown, was not used for any choice.",
        "",
    ]
    return "\n".join(front + [""] + body)


def write_model_card(run_dir: Path, results: dict | None = None) -> None:
    """Write ``README.md`` from ``bertfit.json`` and the results (``results.json`` if not given)."""
    meta = json.loads((run_dir / "bertfit.json").read_text(encoding="utf-8"))
    if results is None:
        results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    write_text(run_dir / "README.md", model_card(meta, results, run_dir.resolve().name))
