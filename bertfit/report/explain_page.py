"""An explanation as a page: words shaded by attention and by integrated gradients, as HTML and PNG."""

from __future__ import annotations

from html import escape
from pathlib import Path

from bertfit.files import write_text


def _colour(score: float, scale: float, positive: str, negative: str) -> str:
    """A translucent background: the stronger the score, the deeper the colour."""
    strength = 0.0 if scale == 0 else min(1.0, abs(score) / scale)
    rgb = positive if score >= 0 else negative
    return f"rgba({rgb},{0.08 + 0.72 * strength:.3f})"


def render_html(result: dict) -> str:
    """A self-contained page (no external scripts, styles or fonts) showing the explanation."""
    words = result["words"]
    ig_scale = max((abs(w["integrated_gradients"]) for w in words), default=0.0)
    att_scale = max((w["attention"] for w in words), default=0.0)

    def row(method: str, key: str, scale: float, pos: str, neg: str) -> str:
        spans = []
        for segment in sorted({w["segment"] for w in words}):
            if segment:
                spans.append('<span class="sep">&#8214;</span>')
            for w in (w for w in words if w["segment"] == segment):
                spans.append(
                    f'<span class="w" data-method="{method}" data-score="{w[key]:.6f}" '
                    f'title="{escape(method)}: {w[key]:+.4f}" '
                    f'style="background:{_colour(w[key], scale, pos, neg)}">{escape(w["word"])}</span>'
                )
        return " ".join(spans)

    probs = "".join(
        f"<tr><td>{escape(str(label))}</td><td>{p:.4f}</td>"
        f'<td><div class="bar" style="width:{200 * p:.0f}px"></div></td></tr>'
        for label, p in result["probabilities"].items()
    )
    pair = f"<p><b>pair:</b> {escape(result['pair'])}</p>" if result.get("pair") else ""
    quantity = (
        f"{escape(result['target_output'])} of &quot;{escape(str(result['target_label']))}&quot;"
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>bertfit explanation: {escape(str(result["label"]))}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; max-width: 60em; color: #222 }}
.w {{ padding: 0.15em 0.25em; border-radius: 0.25em; line-height: 2.2 }}
.sep {{ color: #999; margin: 0 0.5em }}
.bar {{ height: 0.8em; background: #4a7fd6 }}
td {{ padding: 0.1em 0.6em }}
.legend span {{ padding: 0.1em 0.5em; margin-right: 0.5em; border-radius: 0.25em }}
</style></head>
<body>
<h1>Prediction: {escape(str(result["label"]))}</h1>
<p><b>text:</b> {escape(result["text"])}</p>{pair}
<table>{probs}</table>
<h2>Integrated gradients of the {quantity}</h2>
<p id="attribution-target">The word scores add up to the {escape(result["attribution_target"])}:
the {quantity} moved {result["output_difference"]:+.4f}, from {result["baseline_output"]:+.4f} for the
{escape(result["baseline"])} baseline to {result["output"]:+.4f} for this text (scores sum to
<span id="attribution-sum">{result["attribution_sum"]:+.4f}</span>; {result["steps"]} steps).
A {escape(result["target_output"])}, not a probability.</p>
<p id="ig">{row("integrated_gradients", "integrated_gradients", ig_scale, "30,150,60", "210,40,40")}</p>
<p class="legend"><span style="background:rgba(30,150,60,0.7)">raises the {quantity}</span>
<span style="background:rgba(210,40,40,0.7)">lowers it</span></p>
<h2>Attention from [CLS], last layer, heads averaged</h2>
<p id="attention">{row("attention", "attention", att_scale, "60,100,220", "60,100,220")}</p>
<p class="legend"><span style="background:rgba(60,100,220,0.7)">more attention</span>
(attention shows where the model looked, not why it decided)</p>
</body></html>
"""


def render_png(result: dict, path) -> None:
    """The same two views as bar charts, one bar per word, for papers and slides."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bertfit.files import save_file_atomic

    words = [w["word"] for w in result["words"]]
    ig = [w["integrated_gradients"] for w in result["words"]]
    att = [w["attention"] for w in result["words"]]
    fig, axes = plt.subplots(2, 1, figsize=(max(6, 0.45 * len(words)), 5), sharex=True)
    axes[0].bar(range(len(words)), ig, color=["#1e963c" if v >= 0 else "#d22828" for v in ig])
    axes[0].axhline(0, color="#444", linewidth=0.6)
    axes[0].set_ylabel(
        f"integrated gradients\n({result['target_output']} of {result['target_label']})"
    )
    axes[0].set_title(
        f"prediction: {result['label']} ({max(result['probabilities'].values()):.3f})"
    )
    axes[1].bar(range(len(words)), att, color="#3c64dc")
    axes[1].set_ylabel("[CLS] attention")
    axes[1].set_xticks(range(len(words)), words, rotation=60, ha="right")
    fig.tight_layout()
    save_file_atomic(lambda tmp: fig.savefig(tmp, format="png", dpi=120), path)
    plt.close(fig)


def write_explanation_pages(folder: Path, explained: list[tuple[dict, str]]) -> None:
    """One page and PNG per explained row (``00001.html``, ...) and an ``index.html`` linking them."""
    links = []
    for i, (result, text) in enumerate(explained):
        name = f"{i + 1:05d}"
        write_text(folder / f"{name}.html", render_html(result))
        render_png(result, folder / f"{name}.png")
        links.append((name, result["label"], text))
    items = "".join(
        f'<li><a href="{n}.html">{escape(str(label))}</a>: {escape(t)}</li>'
        for n, label, t in links
    )
    write_text(
        folder / "index.html",
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>bertfit '
        f"explanations</title></head><body><h1>{len(links)} explanations</h1><ol>{items}</ol></body></html>\n",
    )


def write_explanation_page(page: Path, result: dict) -> Path:
    """The page and, beside it, the same name with .png; returns the PNG's path."""
    write_text(page, render_html(result))
    render_png(result, page.with_suffix(".png"))
    return page.with_suffix(".png")
