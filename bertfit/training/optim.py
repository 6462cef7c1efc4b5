"""The optimizer and its schedule: AdamW with layer-wise rates, linear warmup and decay, one
clipped step."""

from __future__ import annotations

import math
import re

import torch
from torch import nn

from bertfit.config.train import TrainConfig
from bertfit.models.adapters import encoder_layers


def total_steps(examples: int, config: TrainConfig) -> int:
    """Optimizer steps of the whole run (the schedule's length): one per global batch."""
    return math.ceil(examples / config.batch_size) * config.epochs


def make_optimizer(
    model: nn.Module, lr: float, weight_decay: float, device: torch.device, layer_decay: float = 1.0
) -> torch.optim.Optimizer:
    """AdamW, no decay on biases and LayerNorm weights, fused kernels where available.

    With ``layer_decay`` < 1 each block below the top trains at ``layer_decay`` times the rate of
    the block above it (embeddings lowest, head at the full rate): lower layers hold more general
    features and need less change.
    """
    depth = len(encoder_layers(model))
    groups: dict[tuple[int, bool], list] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            groups.setdefault((_layer_of(name, depth), param.ndim >= 2), []).append(param)
    param_groups = [
        {
            "params": params,
            "weight_decay": weight_decay if decays else 0.0,
            "lr": lr * layer_decay ** (depth + 1 - layer),
        }
        for (layer, decays), params in sorted(groups.items())
    ]
    try:
        return torch.optim.AdamW(param_groups, lr=lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(param_groups, lr=lr)


def _layer_of(name: str, depth: int) -> int:
    """0 for embeddings, i + 1 for block i, depth + 1 for pooler and head."""
    match = re.search(r"(?:layer|blks)\.(\d+)\.", name)
    if match:
        return int(match.group(1)) + 1
    return 0 if "embedding" in name else depth + 1


def linear_schedule(
    optimizer: torch.optim.Optimizer, warmup: int, total: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup to the peak learning rate, then linear decay to zero."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def optimizer_step(model: nn.Module, optimizer, scaler, max_grad_norm: float) -> bool:
    """Clip and step; False (and no step) when a gradient is not finite outside fp16 scaling."""
    scaler.unscale_(optimizer)
    stepped = True
    if max_grad_norm > 0:
        grads = [p for p in model.parameters() if p.grad is not None]
        # foreach: one fused norm over all gradients instead of a hundred small ones
        norm = torch.nn.utils.clip_grad_norm_(grads, max_grad_norm, foreach=True)
        # fp16's scaler skips such steps itself and lowers its scale; elsewhere they are an error
        stepped = scaler.is_enabled() or bool(torch.isfinite(norm))
    if stepped:
        scaler.step(optimizer)
        scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return stepped
