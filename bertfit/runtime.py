"""Where and how tensors run: device, mixed precision, CPU threads.

The process-wide settings a training changes (CPU threads, deterministic kernels, transformers'
warnings and bars) are context managers that put them back, so a server or a hyper-parameter
search running many trainings in one process, possibly in threads, is left as it was.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

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
    """``torch.autocast`` to ``dtype``, or nothing for fp32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


class _ThreadBlocks:
    """The open ``cpu_threads`` blocks of this process (any thread), oldest first.

    ``torch.set_num_threads`` is process-wide, so the blocks share one setting: the newest open
    block decides, and the count from before the first block comes back when the last one ends.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.open: list[tuple[object, int]] = []
        self.before = 1

    def enter(self, threads: int) -> object:
        token = object()
        with self.lock:
            if not self.open:
                self.before = torch.get_num_threads()
            torch.set_num_threads(threads)
            self.open.append((token, threads))
        return token

    def exit(self, token: object) -> None:
        with self.lock:
            self.open = [block for block in self.open if block[0] is not token]
            torch.set_num_threads(self.open[-1][1] if self.open else self.before)


_THREAD_BLOCKS = _ThreadBlocks()


def release_free_heap() -> None:
    """Give the C heap's free pages back to the system (glibc's ``malloc_trim``).

    Training allocates activations of a different shape every step, and glibc keeps the holes
    they leave: on SST-2 with MiniLM about 300 MB of a 1.4 GB peak were free heap. A trim costs
    about 15 ms on 2 cores, so the loop calls it every few steps. Elsewhere (musl, macOS) nothing.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim():
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def available_cores() -> int:
    """The cores this process may run on (torch's default can exceed a container's share)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return min(cores, torch.get_num_threads()) or 1


@contextlib.contextmanager
def cpu_threads(threads: int | None) -> Iterator[int]:
    """Run the block with ``threads`` intra-op CPU threads (None: ``available_cores()``).

    The previous count comes back afterwards, also after an exception. The setting is
    process-wide: nested blocks restore in LIFO order, and when blocks of several threads
    overlap, the newest open one decides for all of them until it ends (then the next newest;
    after the last, the count from before the first).

    Example: ``with cpu_threads(config.threads): fit(...)``; yields the count in force.
    """
    count = available_cores() if threads is None else threads
    if count < 1:
        raise ConfigError(f"--threads must be at least 1, got {count}")
    token = _THREAD_BLOCKS.enter(count)
    try:
        yield count
    finally:
        _THREAD_BLOCKS.exit(token)


CUBLAS_WORKSPACE = "CUBLAS_WORKSPACE_CONFIG"


def _restore_env(name: str, value: str | None) -> None:
    """Put an environment variable back as it was (None: it was not set)."""
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool) -> Iterator[None]:
    """``--deterministic``: only deterministic kernels, so equal seeds give equal weights.

    cuBLAS needs a fixed workspace for that (set before its first use); the previous settings
    and ``$CUBLAS_WORKSPACE_CONFIG`` come back afterwards, so a library caller's process is
    left as it was.
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
    workspace = os.environ.get(CUBLAS_WORKSPACE)
    try:
        os.environ.setdefault(CUBLAS_WORKSPACE, ":4096:8")
        # warn_only: a GPU op without a deterministic kernel warns instead of stopping the run
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[3])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[1:3]
        _restore_env(CUBLAS_WORKSPACE, workspace)


class _QuietDepth(threading.local):
    """How many ``quiet_transformers`` blocks the current thread is inside."""

    depth = 0


_QUIET = _QuietDepth()


class _QuietThreads(logging.Filter):
    """Drops transformers' records below ERROR that a thread inside ``quiet_transformers`` logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        ours = record.name == "transformers" or record.name.startswith("transformers.")
        return not (ours and _QUIET.depth and record.levelno < logging.ERROR)


class _QuietBars:
    """A transformers tqdm hook: a disabled bar for quiet threads, the usual one for others."""

    def __init__(self) -> None:
        self.installed = False
        self.previous: Callable | None = (
            None  # the hook that was there before; it still makes every bar
        )

    def install(self, hf_logging: ModuleType) -> None:
        if not self.installed:
            self.previous = hf_logging.set_tqdm_hook(self)
            self.installed = True

    def __call__(self, factory: Callable, args: tuple, kwargs: dict):
        if _QUIET.depth:
            kwargs = {**kwargs, "disable": True}
        if self.previous is not None:
            return self.previous(factory, args, kwargs)
        return factory(*args, **kwargs)


class _GlobalBars:
    """Older transformers have only the process-wide switch: bars are off while any thread is
    quiet, and come back (if they were on) when the last quiet block ends."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count = 0
        self.were_on = False

    def hide(self, hf_logging: ModuleType) -> None:
        with self.lock:
            if self.count == 0:
                self.were_on = hf_logging.is_progress_bar_enabled()
                hf_logging.disable_progress_bar()
            self.count += 1

    def restore(self, hf_logging: ModuleType) -> None:
        with self.lock:
            self.count -= 1
            if self.count == 0 and self.were_on:
                hf_logging.enable_progress_bar()


_QUIET_LOCK = threading.Lock()
_QUIET_FILTER = _QuietThreads()
_QUIET_BARS = _QuietBars()
_GLOBAL_BARS = _GlobalBars()


def _filter_transformers_handlers(hf_logging: ModuleType) -> None:
    """Put the filter on every handler a transformers record reaches now (idempotent).

    On handlers, not on the ``transformers`` logger: a logger's filters see only records logged
    to it by name, and the messages come from child loggers (``transformers.modeling_utils``),
    some first created during the load itself.
    """
    logger: logging.Logger | None = hf_logging.get_logger()  # sets up transformers' handler first
    while logger is not None:
        for handler in logger.handlers:
            handler.addFilter(_QUIET_FILTER)  # addFilter skips a filter that is there already
        logger = logger.parent if logger.propagate else None


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence "some weights were newly initialized" (a new head is the point of fine-tuning)
    and the "Loading weights" bars of a 1-second load, for the current thread only.

    transformers' verbosity is left alone: its records below ERROR from this thread are dropped
    at the handlers, so other threads' warnings still get through and nested or concurrent
    blocks cannot undo each other. Threads started inside the block are not quiet.

    Example: ``with quiet_transformers(): AutoModel.from_pretrained(path)``
    """
    from transformers.utils import logging as hf_logging

    per_thread_bars = hasattr(hf_logging, "set_tqdm_hook")  # newer transformers only
    with _QUIET_LOCK:
        _filter_transformers_handlers(hf_logging)
        if per_thread_bars:
            _QUIET_BARS.install(hf_logging)
    if not per_thread_bars:
        _GLOBAL_BARS.hide(hf_logging)
    _QUIET.depth += 1
    try:
        yield
    finally:
        _QUIET.depth -= 1
        if not per_thread_bars:
            _GLOBAL_BARS.restore(hf_logging)
