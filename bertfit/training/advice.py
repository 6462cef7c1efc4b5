"""One line of advice for what stops a run: out of memory, a full disk, a NaN, a signal."""

from __future__ import annotations

import logging
import signal
from pathlib import Path

import torch

from bertfit.errors import Interrupted, TrainingError
from bertfit.training.checkpoint import StopSignals, last_checkpoint

log = logging.getLogger("bertfit")
# The allocators that raise a plain RuntimeError instead of torch.OutOfMemoryError (the CPU
# allocator always; CUDA before torch 2.1): matched by their own message, not by any error that
# happens to say "out of memory"
ALLOCATOR_MESSAGES = (
    "DefaultCPUAllocator: can't allocate memory",
    "CUDA out of memory",
    "MPS backend out of memory",
)


def is_out_of_memory(err: BaseException) -> bool:
    typed = getattr(torch, "OutOfMemoryError", None)
    if typed is not None and isinstance(err, typed):
        return True
    return isinstance(err, RuntimeError) and any(m in str(err) for m in ALLOCATOR_MESSAGES)


def out_of_memory_advice(
    device: torch.device, batch_size: int, grad_accum: int, max_length: int, output: Path
) -> str:
    shorter = max(8, max_length // 2)
    last = last_checkpoint(output)
    kept = f"; the last checkpoint is {last.path}" if last else ""
    return (
        f"out of memory on {device} with --batch-size {batch_size} and --max-length "
        f"{max_length}: try --grad-accum {grad_accum * 2} (the same batch of {batch_size} in "
        f"twice as many passes, each half the memory), or --max-length {shorter}, or "
        f"--precision bf16{kept}"
    )


def disk_full_message(output: Path, err: OSError) -> str:
    last = last_checkpoint(output)
    kept = (
        f"the last complete checkpoint {last.path} is intact; free some space and resume with: "
        f"bertfit train --resume {output}"
        if last
        else "no checkpoint was complete yet"
    )
    where = f" writing {err.filename}" if err.filename else ""
    return f"no space left on the device{where}; {kept}"


def non_finite_stop(where: str, what: str, output: Path) -> TrainingError:
    """The error that stops a run at a NaN/inf loss or gradient, naming the last checkpoint."""
    last = last_checkpoint(output)
    kept = f"the last good checkpoint is {last.path}; " if last else ""
    return TrainingError(
        f"{where}: {what}; stopped. {kept}lower --lr, or pass --skip-nonfinite to skip such "
        "batches" + (f" (bertfit train --resume {output} --skip-nonfinite)" if last else "")
    )


def interrupted(stop: StopSignals, step: int, path: Path, output: Path) -> Interrupted:
    name = signal.Signals(stop.requested).name
    return Interrupted(
        f"{name} at step {step}: saved {path}; resume with: bertfit train --resume {output}",
        stop.exit_code,
    )


def announce_stop(number: int) -> None:
    name = signal.Signals(number).name
    log.warning(
        f"{name}: stopping after this step to save a checkpoint "
        "(press Ctrl-C again to quit at once)"
    )
