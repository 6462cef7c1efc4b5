"""All-gather with gradients, for a loss that sets each rank's rows against every rank's (the
contrastive objective's in-batch negatives across processes)."""

from __future__ import annotations

import torch
import torch.distributed as dist

from bertfit.training.distributed import World


def gather_with_grad(world: World, rows: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's ``rows`` in rank order (``[rows]`` for one process): tensors of the same
    width and dtype on every rank, but any number of rows, also none. When ``rows`` requires
    grad, gradients flow back to each rank's own rows.

    Every rank must call it, with ``rows.requires_grad`` the same everywhere, and then run its
    backward too: the backward is a collective that sums, on each rank, the gradients every
    rank's loss sends to that rank's rows. The rows are padded to the longest rank's (a
    gathered count) and the padding is dropped.

    >>> parts = gather_with_grad(world, v)  # doctest: +SKIP
    >>> everyone = torch.cat(parts); mine_start = sum(map(len, parts[: world.rank]))
    """
    if not world.distributed:
        return [rows]
    count = torch.tensor([len(rows)], device=rows.device)
    counts = [torch.zeros_like(count) for _ in range(world.size)]
    dist.all_gather(counts, count)
    sizes = [int(n) for n in counts]
    padded = torch.cat([rows, rows.new_zeros((max(sizes) - len(rows), *rows.shape[1:]))])
    if rows.requires_grad:
        stacked = _AllGather.apply(padded)
    else:
        stacked = torch.stack(_all_gather(padded))
    return [stacked[rank, :size] for rank, size in enumerate(sizes)]


def _all_gather(tensor: torch.Tensor) -> list[torch.Tensor]:
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return parts


class _AllGather(torch.autograd.Function):
    """``dist.all_gather`` (stacked) whose backward gives each rank the sum of every rank's
    gradient for its rows: one all_reduce, which gloo and NCCL both have (gloo lacks
    reduce_scatter), and no deprecated ``torch.distributed.nn`` call."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        return torch.stack(_all_gather(tensor))

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        summed = grad.clone(memory_format=torch.contiguous_format)  # not the caller's buffer
        dist.all_reduce(summed)
        return summed[dist.get_rank()]
