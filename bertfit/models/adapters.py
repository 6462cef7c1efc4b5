"""One adapter per model kind: where its blocks, embeddings and output layer are.

The rest of the package asks the adapter instead of probing a model's attributes, so a new kind
of encoder needs one class here.
"""

from __future__ import annotations

from torch import nn

from bertfit.errors import ModelError
from bertfit.models.d2l import D2LBertForSequenceClassification


class HFAdapter:
    """Hugging Face ``...ForSequenceClassification`` models (BERT, RoBERTa, ELECTRA, ...)."""

    kind = "hf"

    def layers(self, model: nn.Module) -> nn.ModuleList:
        return getattr(model, "base_model", model).encoder.layer

    def embeddings(self, model: nn.Module) -> list[nn.Module | nn.Parameter]:
        return [model.base_model.embeddings]

    def word_embeddings(self, model: nn.Module) -> nn.Embedding:
        return model.get_input_embeddings()

    def output_layer(self, model: nn.Module) -> nn.Linear:
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


class D2LAdapter:
    """The "Dive into Deep Learning" book's BERT with a classification head (``models/d2l.py``)."""

    kind = "d2l"

    def layers(self, model: nn.Module) -> nn.Sequential:
        return model.encoder.blks

    def embeddings(self, model: nn.Module) -> list[nn.Module | nn.Parameter]:
        enc = model.encoder
        return [enc.token_embedding, enc.segment_embedding, enc.pos_embedding]

    def word_embeddings(self, model: nn.Module) -> nn.Embedding:
        return model.encoder.token_embedding

    def output_layer(self, model: nn.Module) -> nn.Linear:
        return model.output


def adapter_for(model: nn.Module) -> HFAdapter | D2LAdapter:
    """The adapter of a classifier (or bi-encoder's encoder) built by ``models/``."""
    if isinstance(model, D2LBertForSequenceClassification):
        return D2LAdapter()
    return HFAdapter()


def is_d2l_model(model: nn.Module) -> bool:
    return adapter_for(model).kind == "d2l"


def encoder_layers(model: nn.Module) -> nn.ModuleList | nn.Sequential:
    """The stack of transformer blocks, for --train-last-layers and layer-wise learning rates."""
    return adapter_for(model).layers(model)


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
    parts = adapter_for(model)

    def off(part: nn.Module | nn.Parameter) -> None:
        for param in [part] if isinstance(part, nn.Parameter) else part.parameters():
            param.requires_grad_(False)

    if not word_embeddings_too:
        off(parts.word_embeddings(model))
    if embeddings or train_last_layers is not None:
        for part in parts.embeddings(model):
            off(part)
    if train_last_layers is not None:
        layers = parts.layers(model)
        for layer in list(layers)[: max(0, len(layers) - train_last_layers)]:
            off(layer)
