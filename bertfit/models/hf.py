"""Hugging Face encoders as classifiers: build one with a new head, refusing weights that do not
fit their config."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from bertfit.errors import ModelError
from bertfit.models.adapters import HFAdapter
from bertfit.models.encoders import Encoder, load_weights_only, one_line
from bertfit.runtime import quiet_transformers


def build_hf_classifier(
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
    head = HFAdapter().output_layer(model)
    nn.init.normal_(head.weight, mean=0.0, std=0.02)
    nn.init.zeros_(head.bias)
    return model


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
