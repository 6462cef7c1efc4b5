"""Encoder + classification head: build one from a pretrained encoder, save it as a run, load it back.

Hugging Face encoders use ``AutoModelForSequenceClassification`` (pretrained pooler where the
checkpoint has one, a new output layer); d2l checkpoints use our own module with the book's
structure. Both take ``input_ids``/``token_type_ids``/``attention_mask`` and return ``.logits``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bertfit.data.packing import HFTokenizer, Tokenizer
from bertfit.errors import ModelError
from bertfit.models.encoders import Encoder, load_weights_only, one_line, position_limit
from bertfit.runtime import quiet_transformers


def load_tokenizer(encoder: Encoder) -> Tokenizer:
    """The encoder's own tokenizer (fast, Rust) behind the packing interface."""
    if encoder.kind == "d2l":
        from bertfit.models.d2l import D2LTokenizer, load_d2l_checkpoint

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
        from bertfit.models.d2l import D2LBertForSequenceClassification, load_d2l_checkpoint

        config, state, _ = load_d2l_checkpoint(encoder.path)
        if dropout is not None:
            config.dropout = dropout
        model = D2LBertForSequenceClassification(config, len(labels))
        model.load_pretrained(state)
        model.id2label = dict(enumerate(labels))
        return full_precision_head(model)
    return full_precision_head(_build_hf_classifier(encoder, labels, dropout, problem))


def _build_hf_classifier(
    encoder: Encoder, labels: list[str], dropout: float | None, problem: str
) -> nn.Module:
    from transformers import AutoConfig, AutoModelForSequenceClassification

    path = str(encoder.path)
    try:
        config = AutoConfig.from_pretrained(path)
    except Exception as err:
        raise ModelError(
            f"{encoder.path}/config.json: cannot read the model config ({one_line(err)})"
        ) from None
    config.num_labels = len(labels)
    config.problem_type = problem  # so transformers' own loss and pipelines treat it right
    config.id2label = dict(enumerate(labels))
    config.label2id = {label: i for i, label in enumerate(labels)}
    if dropout is not None:
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "dropout"):
            if hasattr(config, name):
                setattr(config, name, dropout)
    weights = encoder.path / "model.safetensors"
    if not weights.is_file():
        weights = encoder.path / "pytorch_model.bin"
        _check_pickle_is_weights_only(weights)
    try:
        with quiet_transformers():
            # float32 master weights even for fp16/bf16 checkpoints: half-precision parameters
            # overflow in AdamW (autocast gives the speed of bf16 where it is safe)
            model, info = AutoModelForSequenceClassification.from_pretrained(
                path,
                config=config,
                dtype=torch.float32,
                output_loading_info=True,
                ignore_mismatched_sizes=True,  # reported below, naming the files
            )
    except Exception as err:
        raise ModelError(
            f"{weights}: cannot load the weights ({type(err).__name__}: {one_line(err)})"
        ) from None
    _check_loading_info(model, info, weights, encoder.path / "config.json")
    head = _output_layer(model)
    nn.init.normal_(head.weight, mean=0.0, std=0.02)
    nn.init.zeros_(head.bias)
    return model


class Float32Linear(nn.Linear):
    """An output layer that computes in float32 even under bf16/fp16 autocast.

    bf16 has 8 bits of mantissa: a score near 4 is rounded to a multiple of 1/32, so nearby
    regression outputs collapse into ties, and close class logits become equal. The head is a
    tiny share of the compute, so it runs in full precision. Same parameters as ``nn.Linear``,
    so saved weights are unchanged.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return F.linear(x.float(), self.weight.float(), self.bias.float())


def full_precision_head(model: nn.Module) -> nn.Module:
    """Make the model's output layer a ``Float32Linear`` (in place); returns the model."""
    head = model.output if hasattr(model, "load_pretrained") else _output_layer(model)
    head.__class__ = Float32Linear
    return model


def init_regression_bias(model: nn.Module, mean: float) -> None:
    """Start a regression head at the mean training score instead of 0.

    With scores from 0 to 5 (STS-B) a head starting at 0 spends its first steps, and large
    gradients through the encoder, just learning the offset.
    """
    head = model.output if hasattr(model, "load_pretrained") else _output_layer(model)
    with torch.no_grad():
        head.bias.fill_(mean)


def _check_pickle_is_weights_only(path: Path) -> None:
    """Refuse a .bin that holds anything but tensors, before transformers unpickles it."""
    load_weights_only(path)


def _check_loading_info(model: nn.Module, info: dict, weights: Path, config: Path) -> None:
    """transformers starts missing or misshapen weights at random with only a log line; for the
    pretrained encoder that means the config and the weights are from different models."""
    prefix = getattr(model, "base_model_prefix", "") + "."
    # the head is new anyway: a fine-tuned checkpoint with another number of labels is fine
    mismatched = [
        m for m in info.get("mismatched_keys") or () if len(m) == 3 and str(m[0]).startswith(prefix)
    ]
    if mismatched:
        key, found, wanted = sorted(mismatched, key=lambda m: str(m[0]))[0]
        raise ModelError(
            f"{weights}: does not fit {config}: {len(mismatched)} weights have other shapes "
            f"(e.g. {key} is {tuple(found)} in the weights, {tuple(wanted)} by the config); "
            "config.json and the weights are from different models"
        )
    missing = sorted(
        k for k in info.get("missing_keys") or () if k.startswith(prefix) and ".pooler." not in k
    )
    if missing:
        raise ModelError(
            f"{weights}: {len(missing)} encoder weights that {config.name} describes are missing "
            f"(e.g. {missing[0]}); config.json and the weights are from different models"
        )


def _output_layer(model: nn.Module) -> nn.Linear:
    classifier = getattr(model, "classifier", None)
    if isinstance(classifier, nn.Linear):
        return classifier
    for name in ("out_proj", "dense"):  # RoBERTa-style heads
        layer = getattr(classifier, name, None)
        if isinstance(layer, nn.Linear) and layer.out_features == model.config.num_labels:
            return layer
    raise ModelError(
        f"{type(model).__name__}: cannot find the output layer of the classification head"
    )


def encoder_layers(model: nn.Module) -> nn.ModuleList | nn.Sequential:
    """The stack of transformer blocks, for --train-last-layers."""
    if hasattr(model, "encoder") and hasattr(model.encoder, "blks"):
        return model.encoder.blks  # d2l
    base = getattr(model, "base_model", model)
    return base.encoder.layer


def embedding_modules(model: nn.Module) -> list[nn.Module | nn.Parameter]:
    if hasattr(model, "encoder") and hasattr(model.encoder, "blks"):
        enc = model.encoder
        return [enc.token_embedding, enc.segment_embedding, enc.pos_embedding]
    return [model.base_model.embeddings]


def word_embeddings(model: nn.Module) -> nn.Embedding:
    if hasattr(model, "encoder") and hasattr(model.encoder, "blks"):
        return model.encoder.token_embedding
    return model.get_input_embeddings()


def freeze(
    model: nn.Module,
    embeddings: bool,
    train_last_layers: int | None,
    word_embeddings_too: bool = True,
) -> None:
    """Freeze the embeddings and/or all but the last N blocks (the head always trains).

    ``word_embeddings_too=False`` freezes just the word-embedding matrix: for a small encoder it
    is half the parameters, and its dense gradient and optimizer update cost more time than
    fine-tuning it gains (measured on SST-2, see benchmarks/).
    """

    def off(part: nn.Module | nn.Parameter) -> None:
        for param in [part] if isinstance(part, nn.Parameter) else part.parameters():
            param.requires_grad_(False)

    if not word_embeddings_too:
        off(word_embeddings(model))
    if embeddings or train_last_layers is not None:
        for part in embedding_modules(model):
            off(part)
    if train_last_layers is not None:
        layers = encoder_layers(model)
        for layer in list(layers)[: max(0, len(layers) - train_last_layers)]:
            off(layer)


class FastDropout(nn.Module):
    """Dropout with the same distribution as ``nn.Dropout``, about 3x faster on CPUs.

    ``bernoulli_`` draws one random number per element; here one 64-bit draw yields four
    16-bit numbers, compared against ``p`` (resolution 1/65536). Dropout was a tenth of a
    training step's time for a small encoder on a 2-core CPU.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p
        self.threshold = -32768 + round(p * 65536)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        return x.masked_fill(self.drop_mask(x), 0) * (1.0 / (1.0 - self.p))

    def drop_mask(self, x: torch.Tensor) -> torch.Tensor:
        """True where an element of ``x`` is dropped (probability ``p``)."""
        words = (x.numel() + 3) // 4
        noise = torch.randint(-(2**63), 2**63 - 1, (words,), dtype=torch.int64, device=x.device)
        return noise.view(torch.int16)[: x.numel()].view(x.shape) < self.threshold

    def extra_repr(self) -> str:
        return f"p={self.p}"


def use_fast_dropout(model: nn.Module) -> None:
    """Swap every ``nn.Dropout`` for ``FastDropout`` (CPU only: GPUs have fast dropout kernels)."""
    for name, child in model.named_children():
        if isinstance(child, nn.Dropout):
            setattr(model, name, FastDropout(child.p))
        else:
            use_fast_dropout(child)


def save_classifier(model: nn.Module, tokenizer: Tokenizer, directory: Path) -> None:
    """Write the model in the format ``load_classifier`` (and, for HF, transformers) reads."""
    directory.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".model-", dir=directory))
    try:
        if hasattr(model, "load_pretrained"):  # d2l
            from bertfit.models.d2l import save_d2l_model

            save_d2l_model(model, tokenizer, staging)
        else:
            with quiet_transformers():
                model.save_pretrained(str(staging), safe_serialization=True)
                tokenizer.hf.save_pretrained(str(staging))
        # each file lands whole, by rename; the weights last, so config and tokenizer are never newer
        for item in sorted(staging.iterdir(), key=lambda p: p.suffix == ".safetensors"):
            os.replace(item, directory / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load_classifier(directory: Path, kind: str) -> tuple[nn.Module, Tokenizer]:
    """The fine-tuned model and tokenizer of a run directory."""
    if kind == "d2l":
        from bertfit.models.d2l import load_d2l_model

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
