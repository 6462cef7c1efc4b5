"""The model card: ``README.md`` in a run directory, in the Hugging Face model-card format.

YAML front matter (base model, pipeline tag, datasets, license, metrics with values in
``model-index``) and then what a reader needs: intended use, training data, hyper-parameters,
results with 95% bootstrap intervals, limitations. The folder can be published as it is.
"""

from __future__ import annotations

import json
import re
import string
from pathlib import Path

from bertfit.files import write_text
from bertfit.rundir import CARD, RUN_CONFIG, read_results

PIPELINE = {
    "single_label_classification": "text-classification",
    "multi_label_classification": "text-classification",
    "regression": "text-classification",
    "embedding": "sentence-similarity",
}
HYPER = (
    "epochs",
    "batch_size",
    "grad_accum",
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


TEMPLATE = Path(__file__).with_name("card_template.md")
KINDS = {
    "single_label_classification": "classifies texts into {labels}",
    "multi_label_classification": "tags texts with any of {labels}",
    "regression": "predicts a similarity or rating score",
    "embedding": "embeds sentences as vectors compared by cosine similarity",
}
USAGE = {
    "embedding": "Use `bertfit similarity/embed/search RUN`, `bertfit.load(RUN)` in Python, or "
    "`SentenceTransformer(RUN)` (the vectors bertfit gives in fp32).",
    "classifier": "Use `bertfit predict RUN --text ...`, or "
    "`AutoModelForSequenceClassification.from_pretrained(RUN)`.",
}


def model_card(meta: dict, results: dict, run_name: str) -> str:
    """The card's text for a finished run (``bertfit.json`` and ``results.json`` contents),
    filled into ``card_template.md``."""
    config, problem = meta["config"], meta.get("problem", "single_label_classification")
    data = meta.get("task") or Path(config.get("train") or "data").name
    dev_rows = _metric_rows(results.get("dev", {}), results.get("dev_ci", {}))
    pipeline = PIPELINE.get(problem, "text-classification")
    test_split = results.get("test_split")
    values = {
        "base_model": _yaml_str(meta["encoder"]["name"]),
        "base": meta["encoder"]["name"],
        "pipeline": pipeline,
        "library": "sentence-transformers" if problem == "embedding" else "transformers",
        "license": base_license(meta["encoder"]["path"]),
        "dataset": _yaml_str(data),
        "data": data,
        "metric_names": "".join(f"- {name}\n" for name, _, _ in dev_rows),
        "metric_values": "".join(
            f"    - type: {name}\n      value: {value:.4f}\n" for name, value, _ in dev_rows
        ),
        "run_name_yaml": _yaml_str(run_name),
        "run_name": run_name,
        "kind": KINDS.get(problem, "classifies texts").format(labels=", ".join(meta["labels"])),
        "pair": " (text pairs)" if meta["columns"].get("pair") else "",
        "version": results.get("version", ""),
        "max_length": config["max_length"],
        "truncation": config["truncation"],
        "usage": USAGE["embedding" if problem == "embedding" else "classifier"],
        "train_examples": results.get("train_examples", "?"),
        "dev_examples": results.get("dev_examples", "?"),
        "test_split": f"; test split `{test_split}`."
        if test_split
        else " (no labelled test split).",
        "hyper_rows": "".join(
            f"| {k} | {config[k]} |\n" for k in HYPER if config.get(k) is not None
        ),
        "precision": results.get("precision", "auto"),
        "compute_rows": "".join(_compute_rows(results)),
        "result_rows": "".join(_result_rows(results)),
    }
    return string.Template(TEMPLATE.read_text(encoding="utf-8")).substitute(values)


def _compute_rows(results: dict) -> list[str]:
    """How the run was trained: processes and their backend, the global batch of one optimizer
    step and each process's share of a forward pass, the whole job's examples/s. Runs from
    before these were recorded lack some; their rows are left out."""
    rows = []
    processes = _count(results.get("processes"))
    if processes:
        backend = results.get("ddp_backend")
        over = f" (DDP over {backend})" if processes > 1 and isinstance(backend, str) else ""
        rows.append(f"| processes | {processes}{over} |\n")
    if global_batch := _count(results.get("global_batch")):
        rows.append(f"| global batch | {global_batch} examples per optimizer step |\n")
    if per_process := _count(results.get("per_process_batch")):
        rows.append(f"| per-process batch | {per_process} examples per forward pass |\n")
    speed = results.get("train_examples_per_second", results.get("examples_per_second"))
    if isinstance(speed, (int, float)) and not isinstance(speed, bool) and speed > 0:
        rows.append(f"| training speed | {speed:,.1f} examples/s (whole job) |\n")
    return rows


def _count(value) -> int | None:
    """A positive whole number from results.json, else None (missing, null or malformed)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not value.is_integer():  # also NaN and infinity
        return None
    return int(value) if value >= 1 else None


def _result_rows(results: dict) -> list[str]:
    rows = []
    for split in ("dev", "test"):
        for name, value, ci in _metric_rows(results.get(split, {}), results.get(f"{split}_ci", {})):
            interval = f"{ci[0]:.4f} to {ci[1]:.4f}" if ci else ""
            rows.append(f"| {split} | {name} | {value:.4f} | {interval} |\n")
    return rows


def write_model_card(run_dir: Path, results: dict | None = None) -> None:
    """Write ``README.md`` from ``bertfit.json`` and the results (``results.json`` if not given)."""
    meta = json.loads((run_dir / RUN_CONFIG).read_text(encoding="utf-8"))
    if results is None:
        results = read_results(run_dir)
    write_text(run_dir / CARD, model_card(meta, results, run_dir.resolve().name))
