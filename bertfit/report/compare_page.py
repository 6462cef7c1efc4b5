"""The comparison page of ``bertfit compare``: metrics side by side, paired tests, curves."""

from __future__ import annotations

from html import escape
from pathlib import Path

from bertfit.files import write_text
from bertfit.report.plots import read_jsonl, save_figure
from bertfit.rundir import METRICS, STEPS


def write_compare_page(page: Path, runs: list[Path], results: dict, out: dict) -> Path:
    """The comparison page: dev metrics side by side, the paired tests, the curves."""
    figures = compare_figures(page, runs, out["metric"])
    names = out["compared"]  # what every run measured; the notes say what is left out
    head = "".join(f"<th>{escape(r.name)}</th>" for r in runs)
    rows = "".join(
        f"<tr><td>{escape(n)}</td>"
        + "".join(
            f"<td>{out['dev'][str(r)][n]:.4f}"
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
    notes = "".join(f"<li>{escape(n)}</li>" for n in out.get("notes", []))
    notes = f'<ul id="notes">{notes}</ul>' if notes else ""
    write_text(
        page,
        f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>bertfit comparison</title>
<style>body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222 }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em }} td, th {{ border-bottom: 1px solid #ddd; padding: 0.2em 0.7em }}
figure {{ display: inline-block; margin: 0 1em 1em 0 }}</style></head><body>
<h1>Comparison of {len(runs)} runs</h1>
{notes}
<h2 id="metrics">Dev metrics (95% bootstrap intervals)</h2>
<table><tr><th>metric</th>{head}</tr>{rows}</table>
{paired_table}
<h2 id="curves">Curves</h2>{imgs}
</body></html>
""",
    )
    return page


def compare_figures(page: Path, runs: list[Path], metric: str) -> list[str]:
    """Loss and dev ``metric`` curves of every run in one PNG each, beside the page."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    stem = page.with_suffix("")
    figures = []
    for source, key, name in ((STEPS, "loss", "loss"), (METRICS, "dev", "dev")):
        fig, ax = plt.subplots(figsize=(6, 3.2))
        for run in runs:
            rows = read_jsonl(run / source)
            ys = [r[key].get(metric, np.nan) if key == "dev" else r[key] for r in rows]
            ax.plot([r["step"] for r in rows], ys, "o-" if key == "dev" else "-", label=run.name)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("training loss" if key == "loss" else f"dev {metric}")
        ax.legend()
        ax.grid(alpha=0.3)
        path = stem.with_name(f"{stem.name}_{name}.png")
        save_figure(fig, path)
        figures.append(path.name)
    return figures
