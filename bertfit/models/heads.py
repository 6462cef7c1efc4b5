"""The classification head's output layer: computed in float32, and started where it helps."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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
    from bertfit.models.adapters import adapter_for  # here: it imports transformers' outputs

    head = adapter_for(model).output_layer(model)
    head.__class__ = Float32Linear
    return model


def init_regression_bias(model: nn.Module, mean: float) -> None:
    """Start a regression head at the mean training score instead of 0.

    With scores from 0 to 5 (STS-B) a head starting at 0 spends its first steps, and large
    gradients through the encoder, just learning the offset.
    """
    from bertfit.models.adapters import adapter_for

    head = adapter_for(model).output_layer(model)
    with torch.no_grad():
        head.bias.fill_(mean)
