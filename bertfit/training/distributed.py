"""The thin layer between the training loop and PyTorch's distributed engine (torchrun).

torchrun starts one process per device and tells each its place through the environment
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``); ``World.from_env`` reads it.
Every rank computes the same seeded global batch order; ``rank_slices`` cuts each global batch
into one slice per rank with about the same padded tokens, so no rank waits long on another;
``check_global_batch`` keeps ``--batch-size`` the global batch of one optimizer step.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

import numpy as np

from bertfit.data.packing import budget_cuts
from bertfit.errors import ConfigError


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (one process: rank 0 of 1)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1

    @property
    def is_main(self) -> bool:
        """The one process that writes the run directory, logs and shows progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> World:
        """The world torchrun describes in the environment; one process when it says nothing."""
        env = os.environ if env is None else env
        try:
            size = int(env.get("WORLD_SIZE", "1"))
            rank = int(env.get("RANK", "0"))
            local_rank = int(env.get("LOCAL_RANK", str(rank)))
            local_size = int(env.get("LOCAL_WORLD_SIZE", str(size)))
        except ValueError as err:
            raise ConfigError(f"torchrun's environment is not numbers: {err}") from None
        if not (0 <= rank < size and 0 <= local_rank < local_size <= size):
            raise ConfigError(
                f"inconsistent torchrun environment: RANK {rank}, WORLD_SIZE {size}, "
                f"LOCAL_RANK {local_rank}, LOCAL_WORLD_SIZE {local_size}"
            )
        return cls(rank, size, local_rank, local_size)


ONE_PROCESS = World()


def pick_backend(device_type: str, override: str | None = None) -> str:
    """NCCL between GPUs, gloo between CPU processes; ``override`` (--ddp-backend) wins."""
    if override is not None:
        if override not in ("nccl", "gloo"):
            raise ConfigError(f"--ddp-backend must be nccl or gloo, got {override!r}")
        if override == "nccl" and device_type != "cuda":
            raise ConfigError("--ddp-backend nccl needs CUDA GPUs; use gloo on the CPU")
        return override
    return "nccl" if device_type == "cuda" else "gloo"


def threads_per_process(world: World, cores: int) -> int:
    """CPU threads for each of this machine's processes, so together they fill the cores
    without oversubscribing them (two processes of two threads on two cores run slower than
    one of two)."""
    return max(1, cores // max(1, world.local_size))


def check_global_batch(batch_size: int, grad_accum: int, world_size: int) -> int:
    """Examples per rank per forward pass: ``--batch-size`` is the global batch of one optimizer
    step, split across ``--grad-accum`` passes and the ranks; it must divide evenly."""
    parts = grad_accum * world_size
    if batch_size % parts:
        raise ConfigError(
            f"--batch-size {batch_size} (the global batch of one optimizer step) does not split "
            f"evenly over --grad-accum {grad_accum} x {world_size} processes = {parts}; use a "
            f"multiple of {parts}, e.g. {max(parts, batch_size - batch_size % parts)}"
        )
    return batch_size // parts


def rank_slices(indices: Sequence[int], lengths: np.ndarray, world_size: int) -> list[list[int]]:
    """Cut one global batch into ``world_size`` slices, one per rank, with about the same
    padded tokens (rows x longest row) each.

    The rows go longest first, so the slice with the longest rows holds fewer of them. Every
    rank gets a slice (an empty one when the batch has fewer rows than ranks): all ranks then
    take part in every gradient reduction and none waits for a step that never comes. The cut
    depends only on the batch and the lengths, so every rank computes the same one.
    """
    order = sorted(indices, key=lambda i: (-int(lengths[i]), i))
    if world_size == 1 or len(order) <= world_size:
        return [order[r : r + 1] for r in range(world_size)] if world_size > 1 else [order]
    sizes = [int(lengths[i]) for i in order]
    # the least budget of padded tokens per slice that fits the rows into world_size slices
    low, high = sizes[0], len(sizes) * sizes[0]
    while low < high:
        middle = (low + high) // 2
        if len(budget_cuts(sizes, middle, world_size)) <= world_size:
            high = middle
        else:
            low = middle + 1
    cuts = budget_cuts(sizes, low, world_size)
    cuts = _fill_empty(cuts, world_size)
    return [order[start:end] for start, end in cuts]


def _fill_empty(cuts: list[tuple[int, int]], world_size: int) -> list[tuple[int, int]]:
    """Split the largest slices until there is one per rank (a rank with no rows idles)."""
    cuts = list(cuts)
    while len(cuts) < world_size:
        widest = max(range(len(cuts)), key=lambda k: (cuts[k][1] - cuts[k][0], -k))
        start, end = cuts[widest]
        if end - start < 2:
            break
        middle = start + (end - start) // 2
        cuts[widest : widest + 1] = [(start, middle), (middle, end)]
    while len(cuts) < world_size:
        cuts.append((cuts[-1][1], cuts[-1][1]))
    return cuts


def process_device(device, world: World):
    """This process's device: with several processes on a node of GPUs, GPU ``LOCAL_RANK``
    (``cuda`` alone would put every process on GPU 0)."""
    if device.type != "cuda" or not world.distributed or device.index is not None:
        return device
    import torch

    if world.local_rank >= torch.cuda.device_count():
        raise ConfigError(
            f"{world.local_size} processes on this node but {torch.cuda.device_count()} GPUs; "
            "start one process per GPU (torchrun --nproc-per-node)"
        )
    return torch.device("cuda", world.local_rank)


@contextlib.contextmanager
def process_group(world: World, device, backend: str | None = None) -> Iterator[None]:
    """torch.distributed's process group for the length of one training (nothing for one
    process); it is destroyed afterwards, also after an error."""
    if not world.distributed:
        yield
        return
    import torch
    import torch.distributed as dist

    if device.type == "cuda":
        torch.cuda.set_device(device)  # NCCL's collectives and object gathers use it
    dist.init_process_group(pick_backend(device.type, backend), timeout=timedelta(minutes=30))
    try:
        yield
    finally:
        dist.destroy_process_group()


@contextlib.contextmanager
def node_first(world: World) -> Iterator[None]:
    """The first process of each node runs the block before the others (one download and one
    tokenising per node; the others then read the files and the cache it wrote).

    If the first process fails in the block, the others never pass the barrier: its error is
    the job's, and torchrun stops them.
    """
    if world.distributed and world.local_rank != 0:
        barrier(world)
    yield
    if world.distributed and world.local_rank == 0:
        barrier(world)


def rank_seed(seed: int, rank: int, step: int = 0) -> int:
    """The seed of rank ``rank``'s generators (dropout): rank 0 keeps ``seed``, so one process
    draws as before; the others differ, so their dropout masks are not copies of rank 0's.
    ``step`` is for a rank that joins a resumed run with no generator state of its own."""
    if rank == 0 and step == 0:
        return seed
    return (seed * 1_000_003 + rank * 7_919 + step * 104_729) % 2**63


def gather_objects(world: World, value):
    """Every rank's ``value`` in rank order (``[value]`` for one process)."""
    if not world.distributed:
        return [value]
    import torch.distributed as dist

    values: list = [None] * world.size
    dist.all_gather_object(values, value)
    return values


def is_peer_failure(err: BaseException) -> bool:
    """Whether ``err`` is a collective that failed because another process died: that process
    (or torchrun) says why; this one only stops."""
    import torch.distributed as dist

    if isinstance(err, getattr(dist, "DistError", ())) and not isinstance(
        err, getattr(dist, "DistStoreError", ())
    ):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and any(m in text for m in _PEER_GONE)


# what gloo and NCCL say when a peer of a collective is gone
_PEER_GONE = (
    "Connection closed by peer",
    "Connection reset by peer",
    "Broken pipe",
    "NCCL communicator was aborted",
)


def barrier(world: World) -> None:
    if world.distributed:
        import torch.distributed as dist

        dist.barrier()


def sum_across(world: World, values: list[float]) -> list[float]:
    """Each value summed over the ranks (the values themselves for one process)."""
    if not world.distributed:
        return values
    import torch
    import torch.distributed as dist

    tensor = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(tensor)
    return tensor.tolist()


def reduce_gradients(model, world: World) -> None:
    """Sum every parameter's gradient over the ranks, in one flat buffer per dtype.

    Each rank's loss is its slice's mean scaled by the slice's share of the global batch, so the
    sum is the gradient of the global batch's mean loss: what one process computes.
    """
    if not world.distributed:
        return
    import torch
    import torch.distributed as dist

    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        if p.grad is None:  # a rank with no rows in this batch contributes nothing
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat)
    offset = 0
    for p in params:
        count = p.grad.numel()
        p.grad.copy_(flat[offset : offset + count].view_as(p.grad))
        offset += count


def gather_rows(world: World, indices: np.ndarray, rows: np.ndarray, total: int) -> np.ndarray:
    """Every rank's output rows put together in example order: rank r computed the examples
    ``indices`` (its shard) of ``total``; each example comes back exactly once."""
    if not world.distributed:
        return rows
    parts = gather_objects(world, (np.asarray(indices), rows))
    width = next(part[1].shape[1] for part in parts if len(part[0]))
    out = np.empty((total, width), dtype=np.float32)
    for shard, values in parts:
        out[shard] = values
    return out
