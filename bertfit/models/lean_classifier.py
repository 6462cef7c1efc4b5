"""A run's plain BERT classifier loaded without transformers, for prediction.

Importing transformers' BERT code costs 3-4 s on a 2-core CPU (it pulls in scipy, sympy and its
distributed helpers), more than the whole rest of a one-sentence ``bertfit predict``. For a
plain ``BertForSequenceClassification`` the same weights go into a mirror of its modules (the
same parameter names), and ``fastbert.lean_logits`` (tested against transformers' forward)
computes the logits. Anything else, and anything that needs the real model (explain, export),
loads through transformers.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from torch import nn

from bertfit.models.heads import Float32Linear

ARCHITECTURE = "BertForSequenceClassification"
IGNORED_KEYS = ("position_ids",)  # a buffer some checkpoints carry; the forward makes its own


def lean_config(directory: Path) -> dict | None:
    """config.json of a model folder that the mirror computes exactly, or None."""
    try:
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    plain = (
        isinstance(config, dict)
        and config.get("model_type") == "bert"
        and config.get("architectures") == [ARCHITECTURE]
        and config.get("position_embedding_type", "absolute") == "absolute"
        and config.get("hidden_act") == "gelu"
        and not config.get("is_decoder")
        and not config.get("add_cross_attention")
        and (directory / "model.safetensors").is_file()
    )
    return config if plain else None


def _container(**children: nn.Module) -> nn.Module:
    module = nn.Module()
    for name, child in children.items():
        module.add_module(name, child)
    return module


def _layer(width: int, inner: int, eps: float) -> nn.Module:
    attention = _container(
        self=_container(query=nn.Linear(width, width), key=nn.Linear(width, width),
                        value=nn.Linear(width, width), dropout=nn.Identity()),
        output=_container(dense=nn.Linear(width, width), LayerNorm=nn.LayerNorm(width, eps=eps),
                          dropout=nn.Identity()),
    )  # fmt: skip
    return _container(
        attention=attention,
        intermediate=_container(dense=nn.Linear(width, inner)),
        output=_container(dense=nn.Linear(inner, width), LayerNorm=nn.LayerNorm(width, eps=eps),
                          dropout=nn.Identity()),
    )  # fmt: skip


def build_mirror(config: dict) -> nn.Module:
    """Empty modules named as in ``BertForSequenceClassification``, for inference only."""
    width, eps = config["hidden_size"], config.get("layer_norm_eps", 1e-12)
    embeddings = _container(
        word_embeddings=nn.Embedding(config["vocab_size"], width),
        position_embeddings=nn.Embedding(config["max_position_embeddings"], width),
        token_type_embeddings=nn.Embedding(config.get("type_vocab_size", 2), width),
        LayerNorm=nn.LayerNorm(width, eps=eps),
        dropout=nn.Identity(),
    )
    layers = [
        _layer(width, config["intermediate_size"], eps) for _ in range(config["num_hidden_layers"])
    ]
    bert = _container(
        embeddings=embeddings,
        encoder=_container(layer=nn.ModuleList(layers)),
        pooler=_container(dense=nn.Linear(width, width)),
    )
    bert.config = SimpleNamespace(num_attention_heads=config["num_attention_heads"])
    labels = len(config.get("id2label") or {}) or config.get("num_labels", 2)
    return _container(bert=bert, dropout=nn.Identity(), classifier=Float32Linear(width, labels))


def load_lean_classifier(directory: Path) -> nn.Module | None:
    """The fine-tuned plain BERT classifier of ``directory`` in eval mode, or None when it is not
    one whose weights fit the mirror exactly (then transformers loads it)."""
    config = lean_config(directory)
    if config is None:
        return None
    from safetensors.torch import load_file

    try:
        # built on the CPU: the meta device would save ~0.1 s of initialisation but pulls in
        # torch._dynamo (1.5 s) to run its reference kernels
        model = build_mirror(config)
        state = load_file(str(directory / "model.safetensors"))
    except Exception:
        return None
    state = {k: v.float() for k, v in state.items() if not k.endswith(IGNORED_KEYS)}
    wanted = {k: p.shape for k, p in model.state_dict().items()}
    if wanted.keys() != state.keys() or any(wanted[k] != v.shape for k, v in state.items()):
        return None
    model.load_state_dict(state, assign=True)
    return model.eval()
