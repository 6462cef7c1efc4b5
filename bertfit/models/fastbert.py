"""A lean training forward for Hugging Face BERT classifiers, over the model's own weights.

Same maths as ``BertForSequenceClassification`` (tested to 1e-5), without the per-module
wrappers, and with the query/key/value projections fused into one matrix multiply. On a 2-core
CPU a small encoder spends a fifth of each step in framework overhead; this trims it.
Anything that is not a plain BERT classifier runs through the model's own forward.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

RECOMPUTE = "bertfit_recompute_layers"  # set on a BertModel by use_activation_checkpointing


def supports_lean_forward(model: nn.Module) -> bool:
    """A plain BERT classifier, whose logits ``lean_logits`` computes exactly."""
    return type(model).__name__ == "BertForSequenceClassification" and supports_lean_encoder(
        model.bert
    )


def _attention(layer: nn.Module, x: torch.Tensor, mask: torch.Tensor, heads: int) -> torch.Tensor:
    sa = layer.attention.self
    batch, length, width = x.shape
    weight = torch.cat([sa.query.weight, sa.key.weight, sa.value.weight])
    bias = torch.cat([sa.query.bias, sa.key.bias, sa.value.bias])
    q, k, v = (
        F.linear(x, weight, bias)
        .view(batch, length, 3, heads, width // heads)
        .permute(2, 0, 3, 1, 4)
    )
    dropout = getattr(sa.dropout, "p", 0.0) if layer.training else 0.0
    if dropout and x.device.type == "cpu":
        # With dropout, CPU SDPA takes a slow path (3.5x its no-dropout time at 256 tokens);
        # spelled out with our cheap dropout on the probabilities it is 1.5-2x faster.
        # scale q (small) rather than the scores (large); padding enters as an additive -inf
        scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2)
        bias = torch.zeros(mask.shape, dtype=scores.dtype, device=x.device)
        probs = torch.softmax(scores + bias.masked_fill_(~mask, float("-inf")), dim=-1)
        if hasattr(sa.dropout, "drop_mask"):  # FastDropout: rescale the small output instead
            out = (probs.masked_fill(sa.dropout.drop_mask(probs), 0) @ v) * (1 / (1 - dropout))
        else:
            out = sa.dropout(probs) @ v
    else:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
    return out.transpose(1, 2).reshape(batch, length, width)


def lean_hidden(
    bert: nn.Module,
    input_ids: torch.Tensor,
    token_type_ids: torch.Tensor,
    attention_mask: torch.Tensor,
) -> torch.Tensor:
    """The last hidden states of a ``BertModel`` for right-padded inputs."""
    heads = bert.config.num_attention_heads
    emb = bert.embeddings
    positions = torch.arange(input_ids.shape[1], device=input_ids.device)
    x = (
        emb.word_embeddings(input_ids)
        + emb.position_embeddings(positions)
        + emb.token_type_embeddings(token_type_ids)
    )
    x = emb.dropout(emb.LayerNorm(x))
    mask = attention_mask[:, None, None, :].bool()
    recompute = getattr(bert, RECOMPUTE, False) and torch.is_grad_enabled()
    for layer in bert.encoder.layer:
        if recompute:  # keep only the layer's input; the backward recomputes the rest
            x = checkpoint(_layer, layer, x, mask, heads, use_reentrant=False)
        else:
            x = _layer(layer, x, mask, heads)
    return x


def _layer(layer: nn.Module, x: torch.Tensor, mask: torch.Tensor, heads: int) -> torch.Tensor:
    out = layer.attention.output
    x = out.LayerNorm(out.dropout(out.dense(_attention(layer, x, mask, heads))) + x)
    ffn = layer.output
    return ffn.LayerNorm(ffn.dropout(ffn.dense(F.gelu(layer.intermediate.dense(x)))) + x)


def use_activation_checkpointing(encoder: nn.Module) -> bool:
    """Recompute each encoder layer's activations in the backward pass instead of keeping them
    (the random generator is restored, so dropout drops the same elements twice). False when
    the encoder cannot (a d2l model)."""
    if supports_lean_encoder(encoder):
        setattr(encoder, RECOMPUTE, True)
        return True
    if getattr(encoder, "supports_gradient_checkpointing", False):
        if hasattr(encoder, "activation_checkpointing_enable"):  # transformers 5's name
            encoder.activation_checkpointing_enable({"use_reentrant": False})
        else:
            encoder.gradient_checkpointing_enable({"use_reentrant": False})
        return True
    return False


def supports_lean_encoder(bert: nn.Module) -> bool:
    """A plain ``BertModel`` that ``lean_hidden`` computes exactly."""
    config = getattr(bert, "config", None)
    return (
        type(bert).__name__ == "BertModel"
        and getattr(config, "position_embedding_type", "absolute") == "absolute"
        and getattr(config, "hidden_act", None) == "gelu"
        and not getattr(config, "is_decoder", False)
    )


def lean_logits(
    model: nn.Module,
    input_ids: torch.Tensor,
    token_type_ids: torch.Tensor,
    attention_mask: torch.Tensor,
) -> torch.Tensor:
    """Logits of a ``BertForSequenceClassification`` for right-padded inputs."""
    x = lean_hidden(model.bert, input_ids, token_type_ids, attention_mask)
    pooled = torch.tanh(model.bert.pooler.dense(x[:, 0]))
    return model.classifier(model.dropout(pooled))


def training_forward(model: nn.Module) -> Callable[..., torch.Tensor]:
    """The fastest correct way to get logits from ``model`` for a training batch.

    Only logits are computed here (the loss is the loop's), so every ``problem_type`` qualifies.
    """
    if supports_lean_forward(model):
        return lambda **batch: lean_logits(
            model, batch["input_ids"], batch["token_type_ids"], batch["attention_mask"]
        )
    return lambda **batch: model(**batch).logits
