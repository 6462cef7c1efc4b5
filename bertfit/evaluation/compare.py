"""Comparing runs: every run scored on the same examples, a paired bootstrap test, one page.

Runs are compared only where the comparison means something: runs that predict different things
(another problem, label set or bi-encoder objective), or that were judged on different tasks'
dev sets with no common data given, are refused in one line naming what differs. Smaller
differences (another headline metric, a metric one run lacks) are compared on what the runs
share, and the output and the page say so (``notes``).
"""

from __future__ import annotations

from pathlib import Path

from bertfit.config.commands import CompareConfig, EvaluateConfig
from bertfit.data.labels import MULTI, PROBLEMS, REGRESSION, SINGLE, label_targets
from bertfit.errors import ConfigError
from bertfit.evaluation.metrics import paired_bootstrap, score_outputs
from bertfit.evaluation.score import evaluation_examples
from bertfit.inference.run import load
from bertfit.report.compare_page import write_compare_page
from bertfit.rundir import RESULTS, RunMeta, is_finished, read_meta, read_results


def compare_runs(config: CompareConfig) -> dict:
    """Metrics of each run (from its results), and, given data, a paired test of each run
    against the first on the same examples; writes the comparison page.

    Example: ``compare_runs(CompareConfig(runs=["runs/a", "runs/b"], data="dev.tsv"))["paired"]``.
    """
    config.validate()
    runs = [Path(r) for r in config.runs]
    results, metas = {}, {}
    for run in runs:
        if not is_finished(run):
            raise ConfigError(f"{run}: not a finished bertfit run (no {RESULTS})")
        try:
            results[str(run)], metas[str(run)] = read_results(run), read_meta(run)
        except (OSError, ValueError, TypeError) as err:
            raise ConfigError(f"{run}: damaged run files ({err})") from None
    same_examples = bool(config.data or config.task)
    notes = check_comparable(runs, metas, same_examples)
    metric = results[str(runs[0])].get("metric", "accuracy")
    notes += metric_notes(runs, results, metric)
    out = {
        "runs": [str(r) for r in runs],
        "metric": metric,
        "compared": common_metrics(runs, results),
        "dev": {k: v.get("dev", {}) for k, v in results.items()},
        "notes": notes,
    }
    if same_examples:
        out["paired"] = paired_tests(config, runs, metric, metas)
    out["page"] = str(write_compare_page(Path(config.page()), runs, results, out))
    return out


KINDS = {
    SINGLE: "single-label classification",
    REGRESSION: "regression",
    MULTI: "multi-label classification",
}


def _kind(meta: RunMeta) -> str:
    if meta.is_embedding:
        return f"bi-encoder ({meta.objective} objective)"
    return KINDS.get(meta.problem, meta.problem)


def _has_labels(meta: RunMeta) -> bool:
    return meta.problem in (SINGLE, MULTI) or meta.objective == "softmax"


def check_comparable(runs: list[Path], metas: dict, same_examples: bool) -> list[str]:
    """Refuse, in one line, runs that cannot be compared with the first; notes for the rest."""
    first, notes = metas[str(runs[0])], []
    for run in runs[1:]:
        meta = metas[str(run)]
        differs = None
        if _kind(meta) != _kind(first):
            differs = f"{_kind(first)} vs {_kind(meta)}"
        elif _has_labels(first) and set(meta.labels) != set(first.labels):
            differs = f"labels {', '.join(first.labels)} vs {', '.join(meta.labels)}"
        elif first.task and meta.task and first.task != meta.task:
            if not same_examples:
                differs = (
                    f"tasks {first.task} vs {meta.task} (their dev sets differ); give --data or "
                    "--task to score both on the same examples"
                )
            else:
                notes.append(
                    f"{runs[0]} and {run} were trained on different tasks ({first.task} vs "
                    f"{meta.task}): their dev metrics come from different dev sets; the paired "
                    "test scores both on the same examples"
                )
        if differs:
            raise ConfigError(f"{runs[0]} and {run} are not comparable: {differs}")
    return notes


def common_metrics(runs: list[Path], results: dict) -> list[str]:
    """The dev metrics (numbers) every run has, in the first run's order."""
    devs = [results[str(r)].get("dev", {}) for r in runs]
    return [
        name
        for name, value in devs[0].items()
        if isinstance(value, float) and all(isinstance(d.get(name), float) for d in devs)
    ]


def metric_notes(runs: list[Path], results: dict, metric: str) -> list[str]:
    """What is left out or chosen when the runs' metrics differ."""
    notes = []
    chosen = {str(r): results[str(r)].get("metric", "accuracy") for r in runs}
    if len(set(chosen.values())) > 1:
        each = ", ".join(f"{m} for {r}" for r, m in chosen.items())
        notes.append(
            f"the runs picked their best model by different metrics ({each}): the curves and "
            f"the paired test use {metric}, the first run's"
        )
    shared = set(common_metrics(runs, results))
    for run in runs:
        dev = results[str(run)].get("dev", {})
        if not isinstance(dev.get(metric), float):
            raise ConfigError(f"{runs[0]} and {run} are not comparable: {run} has no dev {metric}")
        only = sorted(k for k, v in dev.items() if isinstance(v, float) and k not in shared)
        if only:
            notes.append(f"left out, not measured for every run: {', '.join(only)} (in {run})")
    return notes


def paired_tests(config: CompareConfig, runs: list[Path], metric: str, metas: dict) -> list[dict]:
    """Each run against the first, on the same examples, each with its own tuned thresholds."""
    embedding = [r for r in runs if metas[str(r)].is_embedding]
    if embedding:
        raise ConfigError(
            f"{embedding[0]}: a bi-encoder run; paired tests (--data, --task) are for "
            "classifier runs: compare bi-encoders without them, or score each with "
            "'bertfit evaluate RUN --data FILE'"
        )
    loaded = [load(r, config.device) for r in runs]
    first = loaded[0]
    evaluate = EvaluateConfig(
        run_dir=str(runs[0]),
        data=config.data,
        task=config.task,
        split=config.split,
        data_dir=config.data_dir,
        header=config.header,
        delimiter=config.delimiter,
        quoting=config.quoting,
    )
    examples = evaluation_examples(evaluate, first)
    targets = label_targets(examples.labels, first.labels, PROBLEMS[first.problem].label_kind)
    # a run whose labels come in another order has its columns put in the first run's order
    order = [[r.labels.index(label) for label in first.labels] for r in loaded]
    outputs = [r.logits(examples.texts, examples.pairs)[:, o] for r, o in zip(loaded, order)]

    def scorer(k: int):
        cut = [loaded[k].thresholds[j] for j in order[k]] if first.problem == MULTI else None
        return lambda i: score_outputs(first.problem, targets[i], outputs[k][i], first.labels, cut)

    return [
        {
            "a": str(runs[k]),
            "b": str(runs[0]),
            **paired_bootstrap(scorer(k), scorer(0), len(targets), metric),
        }
        for k in range(1, len(runs))
    ]
