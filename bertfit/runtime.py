"""Where and how tensors run: device, mixed precision, CPU threads."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch

from bertfit.errors import ConfigError


def pick_device(spec: str = "auto") -> torch.device:
    """``auto`` takes the GPU when there is one."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ConfigError(f"--device must be auto, cpu, cuda or cuda:N, got {spec!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA GPU is available here; use --device cpu")
    return device


def cpu_has_bf16() -> bool:
    """True on CPUs with native bf16 matrix instructions (AVX-512 BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def pick_precision(spec: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype (None for fp32): bf16 where the hardware runs it fast, fp16 on older GPUs."""
    if spec == "fp32":
        return None
    if spec == "bf16":
        return torch.bfloat16
    if spec == "fp16":
        if device.type != "cuda":
            raise ConfigError("--precision fp16 needs a CUDA GPU; use bf16 or fp32 on the CPU")
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_bf16() else None


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def set_threads(threads: int | None) -> None:
    """Use the cores this process may run on (torch's default can exceed a container's share)."""
    if threads is None:
        try:
            threads = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            threads = os.cpu_count() or 1
        threads = min(threads, torch.get_num_threads()) or 1
    torch.set_num_threads(threads)


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool):
    """``--deterministic``: only deterministic kernels, so equal seeds give equal weights.

    cuBLAS needs a fixed workspace for that (set before its first use); the previous settings
    come back afterwards, so a library caller's process is left as it was.
    """
    if not enabled:
        yield
        return
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # warn_only: a GPU op without a deterministic kernel warns instead of stopping the run
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[3])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[1:3]


@contextlib.contextmanager
def quiet_transformers():
    """Silence "some weights were newly initialized": a new head is the point of fine-tuning."""
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # "Loading weights" bars for a 1-second load are noise
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()
