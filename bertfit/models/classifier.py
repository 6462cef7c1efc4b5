"""Encoder + classification head: build one from a pretrained encoder, save it as a run, load it back.

Hugging Face encoders use ``AutoModelForSequenceClassification`` (pretrained pooler where the
checkpoint has one, a new output layer); d2l checkpoints use our own module with the book's
structure. Both take ``input_ids``/``token_type_ids``/``attention_mask`` and return ``.logits``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from torch import nn

from bertfit.data.packing import HFTokenizer, Tokenizer
from bertfit.errors import ModelError
from bertfit.files import publish_tree, temporary_dir
from bertfit.models.encoders import Encoder, one_line, position_limit
from bertfit.models.heads import full_precision_head
from bertfit.runtime import quiet_transformers


def load_tokenizer(encoder: Encoder) -> Tokenizer:
    """The encoder's own tokenizer (fast, Rust) behind the packing interface."""
    if encoder.kind == "d2l":
        from bertfit.models.d2l import D2LTokenizer
        from bertfit.models.d2l_checkpoint import load_d2l_checkpoint

        config, _, vocab = load_d2l_checkpoint(encoder.path)
        d2l_tokenizer = D2LTokenizer(vocab)
        d2l_tokenizer.max_positions = config.max_len
        d2l_tokenizer.limit_source = (
            f"max_len {config.max_len} of the d2l checkpoint {encoder.path}"
        )
        return d2l_tokenizer
    from transformers import AutoTokenizer

    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(str(encoder.path), use_fast=True)
    except Exception as err:
        raise ModelError(f"{encoder.path}: cannot load the tokenizer ({one_line(err)})") from None
    if not tokenizer.is_fast:
        raise ModelError(f"{encoder.path}: no fast tokenizer could be built for this model")
    if tokenizer.cls_token_id is None or tokenizer.sep_token_id is None:
        raise ModelError(
            f"{encoder.path}: the tokenizer has no [CLS]/[SEP] tokens; not a BERT-family encoder"
        )
    wrapped = HFTokenizer(tokenizer)
    wrapped.max_positions, wrapped.limit_source = position_limit(encoder.path)
    return wrapped


def build_classifier(
    encoder: Encoder,
    labels: list[str],
    dropout: float | None = None,
    seed: int = 0,
    problem: str = "single_label_classification",
) -> nn.Module:
    """A pretrained encoder with a new output layer for ``labels``, initialised normal(0, 0.02).

    ``problem`` is transformers' ``problem_type``: single_label_classification, regression (one
    output, ``labels == ["score"]``) or multi_label_classification.
    """
    torch.manual_seed(seed)  # the new head's initial weights follow --seed
    if encoder.kind == "d2l":
        from bertfit.models.d2l import D2LBertForSequenceClassification
        from bertfit.models.d2l_checkpoint import load_d2l_checkpoint

        config, state, _ = load_d2l_checkpoint(encoder.path)
        if dropout is not None:
            config.dropout = dropout
        model = D2LBertForSequenceClassification(config, len(labels))
        model.load_pretrained(state)
        model.id2label = dict(enumerate(labels))
        return full_precision_head(model)
    from bertfit.models.hf import build_hf_classifier

    return full_precision_head(build_hf_classifier(encoder, labels, dropout, problem))


def save_classifier(model: nn.Module, tokenizer: Tokenizer, directory: Path) -> None:
    """Write the model in the format ``load_classifier`` (and, for HF, transformers) reads."""
    from bertfit.models.adapters import is_d2l_model  # here: it imports transformers

    directory.mkdir(parents=True, exist_ok=True)
    staging = temporary_dir(directory, ".model-")
    try:
        if is_d2l_model(model):
            from bertfit.models.d2l_checkpoint import save_d2l_model

            save_d2l_model(model, tokenizer, staging)
        else:
            with quiet_transformers():
                model.save_pretrained(str(staging), safe_serialization=True)
                tokenizer.hf.save_pretrained(str(staging))
        # each file lands whole, by rename; the weights last, so config and tokenizer are never newer
        publish_tree(staging)
        for item in sorted(staging.iterdir(), key=lambda p: p.suffix == ".safetensors"):
            os.replace(item, directory / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load_classifier(directory: Path, kind: str) -> tuple[nn.Module, Tokenizer]:
    """The fine-tuned model and tokenizer of a run directory."""
    if kind == "d2l":
        from bertfit.models.d2l_checkpoint import load_d2l_model

        model, tokenizer = load_d2l_model(directory)
        return full_precision_head(model), tokenizer
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from bertfit.models.encoders import weight_shapes

    if (Path(directory) / "model.safetensors").is_file():
        weight_shapes(Path(directory))  # a damaged or truncated weights file is named as such
    try:
        with quiet_transformers():
            model = AutoModelForSequenceClassification.from_pretrained(str(directory))
            tokenizer = AutoTokenizer.from_pretrained(str(directory), use_fast=True)
    except Exception as err:
        raise ModelError(
            f"{directory}: cannot load the trained model ({type(err).__name__}: {one_line(err)})"
        ) from None
    return full_precision_head(model), HFTokenizer(tokenizer)


def load_run_tokenizer(directory: Path) -> Tokenizer:
    """The tokenizer of a run directory alone (Hugging Face runs), without the model; read by
    the tokenizers library alone where it can be (the same ids, without transformers' imports)."""
    from bertfit.data.tokenizer_file import load_tokenizer_file

    direct = load_tokenizer_file(Path(directory))
    if direct is not None:
        return direct
    from transformers import AutoTokenizer

    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(str(directory), use_fast=True)
    except Exception as err:
        raise ModelError(
            f"{directory}: cannot load the tokenizer ({type(err).__name__}: {one_line(err)})"
        ) from None
    return HFTokenizer(tokenizer)
