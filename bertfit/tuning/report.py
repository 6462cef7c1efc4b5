"""A study's outputs: ``trials.csv`` (one row per trial) and ``tune.html`` with the optimisation
history, each parameter against the metric and the parameter importances, as matplotlib PNGs
(kept in OUTPUT/plots and embedded in the page: no network needed to view it)."""

from __future__ import annotations

import base64
import csv
import math
from html import escape
from pathlib import Path
from typing import Any

from bertfit.files import atomic_open, write_text
from bertfit.report.plots import save_figure
from bertfit.tuning.space import Space
from bertfit.tuning.study import trials as study_trials

PLOTS = "plots"
PAGE = "tune.html"
TABLE = "trials.csv"


def write_reports(study: Any, output: Path, space: Space, metric: str) -> dict:
    """Write trials.csv and tune.html; return the trial counts by state and the best trial."""
    trials = study_trials(study)
    finished = [t for t in trials if t.state.name == "COMPLETE"]
    best = max(finished, key=lambda t: t.value) if finished else None
    write_table(output / TABLE, trials, space)
    images = write_plots(output / PLOTS, trials, finished, space, metric, study)
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
    write_text(output / PAGE, page(trials, best, space, metric, images, states))
    return {"best": best, "states": states, "metric": metric}


def write_table(path: Path, trials: list[Any], space: Space) -> None:
    names = [p.name for p in space.params]
    header = ["number", "state", "value", *names, "best_step", "best_epoch", "seconds", "note"]
    with atomic_open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for t in trials:
            attrs = t.user_attrs
            writer.writerow(
                [t.number, t.state.name.lower(), "" if t.value is None else f"{t.value:.6g}"]
                + [t.params.get(n, "") for n in names]
                + [attrs.get("best_step", ""), attrs.get("best_epoch", "")]
                + [attrs.get("seconds", ""), _note(t)]
            )


def _note(trial: Any) -> str:
    if trial.user_attrs.get("error"):
        return trial.user_attrs["error"]
    if trial.state.name == "PRUNED" and trial.intermediate_values:
        step = max(trial.intermediate_values)
        return f"pruned after {step} training examples"
    if "rerun_of" in trial.user_attrs:
        return f"re-run of killed trial {trial.user_attrs['rerun_of']}"
    if trial.state.name == "FAIL":
        return "killed or interrupted while running"
    return ""


def write_plots(folder, trials, finished, space: Space, metric: str, study) -> dict[Path, str]:
    """The PNGs; returns {path: caption}."""
    import matplotlib

    matplotlib.use("Agg")
    folder.mkdir(parents=True, exist_ok=True)
    images = {folder / "history.png": history_plot(folder / "history.png", trials, metric)}
    if finished:
        path = folder / "parameters.png"
        images[path] = parameter_plot(path, finished, space, metric)
    importances = parameter_importances(study, finished)
    if importances:
        images[folder / "importances.png"] = importance_plot(
            folder / "importances.png", importances
        )
    return images


def history_plot(path: Path, trials: list[Any], metric: str) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    done = [t for t in trials if t.state.name == "COMPLETE"]
    pruned = [t for t in trials if t.state.name == "PRUNED" and t.intermediate_values]
    ax.scatter([t.number for t in done], [t.value for t in done], label="completed", zorder=3)
    ax.scatter(
        [t.number for t in pruned],
        [t.intermediate_values[max(t.intermediate_values)] for t in pruned],
        marker="x", color="grey", label="pruned (last report)", zorder=3,
    )  # fmt: skip
    best, xs, ys = -math.inf, [], []
    for t in sorted(done, key=lambda t: t.number):
        best = max(best, t.value)
        xs.append(t.number)
        ys.append(best)
    if xs:
        ax.step(xs, ys, where="post", color="tab:red", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"dev {metric} (best evaluation)")
    ax.set_title("Optimisation history")
    ax.legend(loc="lower right", fontsize="small")
    save_figure(fig, path)
    return f"dev {metric} of each trial, and the best so far"


def parameter_plot(path: Path, finished: list[Any], space: Space, metric: str) -> str:
    import matplotlib.pyplot as plt

    params = space.params
    cols = min(4, len(params))
    rows = math.ceil(len(params) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    values = [t.value for t in finished]
    for ax, p in zip(axes.flat, params):
        xs = [t.params.get(p.name) for t in finished]
        if p.kind == "choice":
            labels = [str(c) for c in p.choices]
            ax.scatter([labels.index(str(x)) for x in xs], values, alpha=0.8)
            ax.set_xticks(range(len(labels)), labels)
        else:
            ax.scatter(xs, values, alpha=0.8)
            if p.log:
                ax.set_xscale("log")
        ax.set_xlabel(p.name)
        ax.set_ylabel(metric)
    for ax in list(axes.flat)[len(params) :]:
        ax.axis("off")
    fig.suptitle("Each parameter against the dev metric (completed trials)")
    save_figure(fig, path)
    return "each searched option against the dev metric"


def parameter_importances(study: Any, finished: list[Any]) -> dict[str, float]:
    """Optuna's parameter importances (its default evaluator); empty when too few trials have
    finished to tell."""
    if len(finished) < 2:
        return {}
    import optuna

    try:
        return dict(optuna.importance.get_param_importances(study))
    except (ValueError, RuntimeError):  # every trial alike, or a parameter seen once
        return {}


def importance_plot(path: Path, importances: dict[str, float]) -> str:
    import matplotlib.pyplot as plt

    names = list(importances)[::-1]
    fig, ax = plt.subplots(figsize=(6.4, 0.45 * len(names) + 1.2))
    ax.barh(names, [importances[n] for n in names])
    ax.set_xlabel("importance (share of the total)")
    ax.set_title("Parameter importances")
    save_figure(fig, path)
    return "how much each option matters to the metric (Optuna's get_param_importances)"


def page(trials, best, space: Space, metric: str, images: dict[Path, str], states: dict) -> str:
    counts = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
    head = f"<p>{len(trials)} trials: {escape(counts)}. Search space: <code>{escape(space.describe())}</code>.</p>"
    if best is not None:
        shown = ", ".join(
            f"{k} = {v:.4g}" if isinstance(v, float) else f"{k} = {v}"
            for k, v in best.params.items()
        )
        head += (
            f"<p><b>Best: trial {best.number}</b>, dev {escape(metric)} {best.value:.4f} "
            f"({escape(shown)}); its run is <code>best/</code>.</p>"
        )
    figures = "".join(
        f'<figure><img alt="{escape(caption)}" src="data:image/png;base64,{encode_png(path)}">'
        f"<figcaption>{escape(caption)}</figcaption></figure>"
        for path, caption in images.items()
    )
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>bertfit tune</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;"
        "padding:0 1rem}img{max-width:100%}figure{margin:1.5rem 0}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:.2rem .5rem;text-align:right}</style></head><body>"
        f"<h1>Hyper-parameter search</h1>{head}{figures}{_trial_table(trials, space)}</body></html>"
    )


def _trial_table(trials: list[Any], space: Space) -> str:
    names = [p.name for p in space.params]
    head = "".join(f"<th>{escape(h)}</th>" for h in ["trial", "state", "value", *names, "note"])
    rows = []
    for t in trials:
        cells = [t.number, t.state.name.lower(), "" if t.value is None else f"{t.value:.4f}"]
        cells += [t.params.get(n, "") for n in names] + [_note(t)]
        rows.append("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in cells) + "</tr>")
    return f"<h2>Trials</h2><table><tr>{head}</tr>{''.join(rows)}</table>"


def encode_png(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")
