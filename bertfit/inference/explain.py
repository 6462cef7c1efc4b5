"""Why did the model decide that? Word scores for one prediction, two ways.

- attention: the last layer's attention from ``[CLS]`` to every token, averaged over heads (what
  the IMDb notes show). Cheap, but attention is not attribution.
- integrated gradients (captum) on the word embeddings for the predicted class, from a baseline
  where every non-special token is ``[PAD]``: each token's share of the difference between the
  model's output for the input and for the baseline (the shares add up to it: completeness).
  The output is the predicted class's logit (``target="logit"``, the default) or its
  log-probability (``target="log-probability"``), never the probability itself; the result names
  it (``attribution_target``, ``target_output``, ``output``, ``baseline_output``).

Word pieces are merged back into words (scores summed for IG, maxed for attention).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from tqdm.auto import tqdm

from bertfit.data.packing import Packed
from bertfit.errors import ModelError
from bertfit.evaluation.metrics import softmax


class Explainable(Protocol):
    """What ``explain`` needs of a loaded run (``inference.run.Run`` has it all)."""

    directory: Path
    model: nn.Module
    tokenizer: Any
    device: torch.device

    @property
    def problem(self) -> str: ...
    @property
    def labels(self) -> list[str]: ...
    @property
    def is_pair(self) -> bool: ...
    def pack(self, texts: list[str], pairs: list[str] | None = None) -> Packed: ...
    def output_label(self, index: int) -> str | int: ...


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


TARGETS = ("logit", "log-probability")  # what integrated gradients attribute
BASELINE = "all-[PAD]"  # every token but [CLS] and [SEP] replaced by [PAD]


def explain(
    run: Explainable, text: str, pair: str | None = None, steps: int = 50, target: str = "logit"
) -> dict:
    """Prediction, probabilities, per-token and per-word attention and IG scores for one input.

    ``target`` is what the IG scores add up to (relative to the baseline): the predicted class's
    ``"logit"`` (default) or its ``"log-probability"``.
    Example: ``explain(bertfit.load("runs/sst2"), "a gorgeous, witty movie")["words"]``.
    """
    if target not in TARGETS:
        raise ModelError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
    _check_explainable(run, pair)
    model = run.model.float().eval()
    packed = run.pack([text], None if pair is None else [pair])
    end = packed.offsets[1]
    ids = torch.tensor(packed.ids[:end], dtype=torch.long, device=run.device)[None]
    types = torch.tensor(packed.types[:end], dtype=torch.long, device=run.device)[None]
    mask = torch.ones_like(ids)
    tokens = run.tokenizer.convert_ids_to_tokens(ids[0].tolist())
    probabilities, attention = _cls_attention(run, model, ids, types, mask)
    predicted = int(probabilities.argmax())
    inputs = (ids, types, mask)
    per_token, delta, ends = _integrated_gradients(run, model, inputs, predicted, steps, target)
    scores = {"attention": attention.tolist(), "integrated_gradients": per_token.tolist()}
    segments = types[0].tolist()
    label = run.output_label(predicted)
    return {
        "text": text,
        "pair": pair,
        "label": label,
        "probabilities": {name: round(float(p), 6) for name, p in zip(run.labels, probabilities)},
        "tokens": [
            {"token": t, "segment": int(s), "attention": a, "integrated_gradients": g}
            for t, s, a, g in zip(
                tokens, segments, scores["attention"], scores["integrated_gradients"]
            )
        ],
        "words": merge_words(tokens, segments, scores),
        "attribution_target": (
            f"{target} of the predicted class {str(label)!r} relative to the {BASELINE} baseline"
        ),
        "target_output": target,
        "target_label": label,
        "baseline": BASELINE,
        "output": ends[0],
        "baseline_output": ends[1],
        "output_difference": ends[0] - ends[1],
        "attribution_sum": float(per_token.sum()),
        "convergence_delta": float(delta.abs().sum()),
        "steps": steps,
    }


def _check_explainable(run: Explainable, pair: str | None) -> None:
    if run.problem != "single_label_classification":
        raise ModelError(f"{run.directory}: explanations are for single-label classifiers")
    if run.is_pair != (pair is not None):
        given = "text pairs: give --pair" if run.is_pair else "single texts"
        raise ModelError(f"{run.directory}: trained on {given}")


def _cls_attention(run: Explainable, model, ids, types, mask):
    """(probabilities, the last layer's attention from [CLS] to each token, heads averaged)."""
    with torch.no_grad(), _eager_attention(model):  # SDPA kernels do not return the weights
        out = model(
            input_ids=ids, token_type_ids=types, attention_mask=mask, output_attentions=True
        )
    if not out.attentions:
        raise ModelError(f"{run.directory}: this model does not return attention weights")
    probabilities = softmax(out.logits.float().cpu().numpy())[0]
    return probabilities, out.attentions[-1][0, :, 0, :].mean(dim=0).float().cpu()


def _integrated_gradients(run: Explainable, model, inputs, label: int, steps: int, target: str):
    """(per-token attributions, convergence delta, (output, baseline output)): integrated
    gradients of class ``label``'s logit or log-probability (``target``) from an all-[PAD]
    baseline that keeps [CLS] and [SEP]."""
    from captum.attr import LayerIntegratedGradients

    ids, types, mask = inputs

    def output(input_ids, token_type_ids, attention_mask):
        logits = model(
            input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask
        ).logits
        return logits if target == "logit" else torch.log_softmax(logits.float(), dim=-1)

    special = {run.tokenizer.cls_token_id, run.tokenizer.sep_token_id}
    keep = torch.tensor([[i in special for i in ids[0].tolist()]], device=ids.device)
    baseline = torch.where(keep, ids, torch.full_like(ids, run.tokenizer.pad_token_id))
    ig = LayerIntegratedGradients(output, model.get_input_embeddings())
    attributions, delta = ig.attribute(
        ids,
        baselines=baseline,
        additional_forward_args=(types, mask),
        target=label,
        n_steps=steps,
        return_convergence_delta=True,
    )
    per_token = attributions.sum(dim=-1)[0].detach().float().cpu()
    with torch.no_grad():
        ends = (
            float(output(ids, types, mask)[0, label]),
            float(output(baseline, types, mask)[0, label]),
        )
    return per_token, delta, ends


def explain_file(
    run, path: str, steps: int = 50, progress: bool = False, **options
) -> Iterator[tuple[dict, str]]:
    """(explanation, text) for every row of a .csv/.tsv/.jsonl/.parquet/.txt file, in the run's
    columns; ``options`` are ``read_examples``'s layout options (header, delimiter, quoting)."""
    from bertfit.data.readers import read_examples
    from bertfit.rundir import trained_columns

    columns = trained_columns(run.meta, None, None, None)
    examples = read_examples(path, columns, with_labels=False, **options)
    rows = tqdm(
        range(len(examples)), desc=f"explaining {len(examples):,} rows", unit="row",
        disable=not progress, file=sys.stderr, leave=False,
    )  # fmt: skip
    for i in rows:
        pair = None if examples.pairs is None else examples.pairs[i]
        yield run.explain(examples.texts[i], pair, steps), examples.texts[i]
