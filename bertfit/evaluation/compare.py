"""Comparing runs: every run scored on the same examples, a paired bootstrap test, one page."""

from __future__ import annotations

from pathlib import Path

from bertfit.config.commands import CompareConfig, EvaluateConfig
from bertfit.data.labels import MULTI, PROBLEMS, label_targets
from bertfit.errors import ConfigError
from bertfit.evaluation.metrics import paired_bootstrap, score_outputs
from bertfit.evaluation.score import evaluation_examples
from bertfit.report.compare_page import write_compare_page
from bertfit.rundir import RESULTS, is_finished, read_results
from bertfit.serve.run import load


def compare_runs(config: CompareConfig) -> dict:
    """Metrics of each run (from its results), and, given data, a paired test of each run
    against the first on the same examples; writes the comparison page."""
    config.validate()
    runs = [Path(r) for r in config.runs]
    results = {}
    for run in runs:
        if not is_finished(run):
            raise ConfigError(f"{run}: not a finished bertfit run (no {RESULTS})")
        results[str(run)] = read_results(run)
    out = {"runs": [str(r) for r in runs], "dev": {k: v.get("dev", {}) for k, v in results.items()}}
    if config.data or config.task:
        metric = results[str(runs[0])].get("metric", "accuracy")
        out["paired"] = paired_tests(config, runs, metric)
    out["page"] = str(write_compare_page(Path(config.output), runs, results, out))
    return out


def paired_tests(config: CompareConfig, runs: list[Path], metric: str) -> list[dict]:
    """Each run against the first, on the same examples, each with its own tuned thresholds."""
    loaded = [load(r, config.device) for r in runs]
    first = loaded[0]
    if any(r.problem != first.problem or r.labels != first.labels for r in loaded):
        raise ConfigError("the runs predict different things (labels or problem differ)")
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
    outputs = [r.logits(examples.texts, examples.pairs) for r in loaded]

    def scorer(k: int):
        cut = loaded[k].thresholds if first.problem == MULTI else None
        return lambda i: score_outputs(first.problem, targets[i], outputs[k][i], first.labels, cut)

    return [
        {
            "a": str(runs[k]),
            "b": str(runs[0]),
            **paired_bootstrap(scorer(k), scorer(0), len(targets), metric),
        }
        for k in range(1, len(runs))
    ]
