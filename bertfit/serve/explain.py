"""Why did the model decide that? Word scores for one prediction, two ways.

- attention: the last layer's attention from ``[CLS]`` to every token, averaged over heads (what
  the IMDb notes show). Cheap, but attention is not attribution.
- integrated gradients (captum) on the word embeddings for the predicted class, from a baseline
  where every non-special token is ``[PAD]``: each token's share of the difference between the
  model's output for the input and for the baseline (the shares add up to it: completeness).

Word pieces are merged back into words (scores summed for IG, maxed for attention).
"""

from __future__ import annotations

import contextlib

import torch

from bertfit.errors import ModelError
from bertfit.serve.run import Run, softmax


@contextlib.contextmanager
def _eager_attention(model):
    """Run ``model`` with the plain attention implementation, then restore the fast one."""
    setter = getattr(model, "set_attn_implementation", None)
    before = getattr(model.config, "_attn_implementation", None)
    if setter is None or before in (None, "eager"):
        yield
        return
    setter("eager")
    try:
        yield
    finally:
        setter(before)


def _word_starts(tokens: list[str]) -> list[bool]:
    """True where a token begins a word: not a ``##`` continuation (WordPiece)."""
    return [not t.startswith("##") for t in tokens]


def merge_words(
    tokens: list[str], segments: list[int], scores: dict[str, list[float]]
) -> list[dict]:
    """Words from word pieces, special tokens dropped: ``{"word", "segment", <score names>}``."""
    words: list[dict] = []
    for i, (token, start) in enumerate(zip(tokens, _word_starts(tokens))):
        if token in ("[CLS]", "[SEP]", "[PAD]"):
            continue
        piece = token[2:] if token.startswith("##") else token
        if start or not words or words[-1]["segment"] != segments[i]:
            words.append({"word": piece, "segment": segments[i], **{k: 0.0 for k in scores}})
            if "attention" in scores:
                words[-1]["attention"] = float(scores["attention"][i])
            if "integrated_gradients" in scores:
                words[-1]["integrated_gradients"] = float(scores["integrated_gradients"][i])
            continue
        words[-1]["word"] += piece
        if "attention" in scores:
            words[-1]["attention"] = max(words[-1]["attention"], float(scores["attention"][i]))
        if "integrated_gradients" in scores:
            words[-1]["integrated_gradients"] += float(scores["integrated_gradients"][i])
    return words


def explain(run: Run, text: str, pair: str | None = None, steps: int = 50) -> dict:
    """Prediction, probabilities, per-token and per-word attention and IG scores for one input.

    Example: ``explain(bertfit.load("runs/sst2"), "a gorgeous, witty movie")["words"]``.
    """
    from captum.attr import LayerIntegratedGradients

    if run.problem != "single_label_classification":
        raise ModelError(f"{run.directory}: explanations are for single-label classifiers")
    if run.is_pair != (pair is not None):
        raise ModelError(
            f"{run.directory}: trained on {'text pairs: give --pair' if run.is_pair else 'single texts'}"
        )
    model = run.model.float().eval()
    packed = run.pack([text], None if pair is None else [pair])
    ids = torch.tensor(packed.ids[: packed.offsets[1]], dtype=torch.long, device=run.device)[None]
    types = torch.tensor(packed.types[: packed.offsets[1]], dtype=torch.long, device=run.device)[
        None
    ]
    mask = torch.ones_like(ids)
    tokens = run.tokenizer.convert_ids_to_tokens(ids[0].tolist())

    with torch.no_grad(), _eager_attention(model):  # SDPA kernels do not return the weights
        out = model(
            input_ids=ids, token_type_ids=types, attention_mask=mask, output_attentions=True
        )
    if not out.attentions:
        raise ModelError(f"{run.directory}: this model does not return attention weights")
    probabilities = softmax(out.logits.float().cpu().numpy())[0]
    target = int(probabilities.argmax())
    attention = (
        out.attentions[-1][0, :, 0, :].mean(dim=0).float().cpu()
    )  # heads averaged, from [CLS]

    def logit(input_ids, token_type_ids, attention_mask):
        return model(
            input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask
        ).logits

    special = {run.tokenizer.cls_token_id, run.tokenizer.sep_token_id}
    baseline = torch.where(
        torch.tensor([[i in special for i in ids[0].tolist()]], device=ids.device),
        ids,
        torch.full_like(ids, run.tokenizer.pad_token_id),
    )
    ig = LayerIntegratedGradients(logit, model.get_input_embeddings())
    attributions, delta = ig.attribute(
        ids,
        baselines=baseline,
        additional_forward_args=(types, mask),
        target=target,
        n_steps=steps,
        return_convergence_delta=True,
    )
    per_token = attributions.sum(dim=-1)[0].detach().float().cpu()
    with torch.no_grad():
        gap = float(logit(ids, types, mask)[0, target] - logit(baseline, types, mask)[0, target])
    scores = {"attention": attention.tolist(), "integrated_gradients": per_token.tolist()}
    return {
        "text": text,
        "pair": pair,
        "label": run.output_label(target),
        "probabilities": {label: round(float(p), 6) for label, p in zip(run.labels, probabilities)},
        "tokens": [
            {"token": t, "segment": int(s), "attention": a, "integrated_gradients": g}
            for t, s, a, g in zip(
                tokens, types[0].tolist(), scores["attention"], scores["integrated_gradients"]
            )
        ],
        "words": merge_words(tokens, types[0].tolist(), scores),
        "output_difference": gap,
        "attribution_sum": float(per_token.sum()),
        "convergence_delta": float(delta.abs().sum()),
        "steps": steps,
    }


def _colour(score: float, scale: float, positive: str, negative: str) -> str:
    """A translucent background: the stronger the score, the deeper the colour."""
    strength = 0.0 if scale == 0 else min(1.0, abs(score) / scale)
    rgb = positive if score >= 0 else negative
    return f"rgba({rgb},{0.08 + 0.72 * strength:.3f})"


def render_html(result: dict) -> str:
    """A self-contained page (no external scripts, styles or fonts) showing the explanation."""
    from html import escape

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
<h2>Integrated gradients (toward "{escape(str(result["label"]))}")</h2>
<p id="ig">{row("integrated_gradients", "integrated_gradients", ig_scale, "30,150,60", "210,40,40")}</p>
<p class="legend"><span style="background:rgba(30,150,60,0.7)">pushes toward the prediction</span>
<span style="background:rgba(210,40,40,0.7)">pushes away from it</span>
(scores sum to {result["attribution_sum"]:+.4f}; output change from the all-[PAD] baseline
{result["output_difference"]:+.4f}; {result["steps"]} steps)</p>
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
    axes[0].set_ylabel("integrated\ngradients")
    axes[0].set_title(
        f"prediction: {result['label']} ({max(result['probabilities'].values()):.3f})"
    )
    axes[1].bar(range(len(words)), att, color="#3c64dc")
    axes[1].set_ylabel("[CLS] attention")
    axes[1].set_xticks(range(len(words)), words, rotation=60, ha="right")
    fig.tight_layout()
    save_file_atomic(lambda tmp: fig.savefig(tmp, format="png", dpi=120), path)
    plt.close(fig)
