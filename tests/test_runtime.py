"""Process-wide settings are scoped to the block that needs them: CPU threads, deterministic
kernels (and cuBLAS's workspace variable), and transformers' logging and progress bars, which a
server or a hyper-parameter search in threads must not flip for each other."""

from __future__ import annotations

import io
import logging
import os
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from bertfit.errors import ConfigError
from bertfit.runtime import CUBLAS_WORKSPACE, cpu_threads, deterministic_algorithms
from bertfit.runtime import quiet_transformers as quiet

# ---- cpu_threads ---------------------------------------------------------------------------------


@pytest.fixture
def three_threads():
    """torch at 3 threads for the test (a count no block below asks for), then as it was."""
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    yield
    torch.set_num_threads(before)


def test_cpu_threads_sets_the_count_for_the_block_and_restores_it(three_threads):
    with cpu_threads(1) as count:
        assert count == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == 3


def test_cpu_threads_restores_the_count_after_an_exception(three_threads):
    with pytest.raises(RuntimeError, match="inside"), cpu_threads(1):
        raise RuntimeError("inside the block")
    assert torch.get_num_threads() == 3


def test_cpu_threads_none_means_the_cores_this_process_may_use(three_threads):
    with cpu_threads(None) as count:
        assert count == torch.get_num_threads() == min(len(os.sched_getaffinity(0)), 3)
    assert torch.get_num_threads() == 3


def test_nested_cpu_threads_restore_in_lifo_order(three_threads):
    with cpu_threads(2):
        with cpu_threads(1):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == 3


def test_overlapping_blocks_ending_out_of_order_leave_the_open_one_its_count(three_threads):
    """Two threads' blocks: the first ends while the second runs (the interleaving is by hand)."""
    first, second = cpu_threads(1), cpu_threads(2)
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert torch.get_num_threads() == 2  # not the 3 from before the first block
    second.__exit__(None, None, None)
    assert torch.get_num_threads() == 3  # not the 1 from before the second block


def test_cpu_threads_refuses_zero_and_changes_nothing(three_threads):
    with pytest.raises(ConfigError, match="--threads must be at least 1, got 0"):
        with cpu_threads(0):
            pass
    assert torch.get_num_threads() == 3


# ---- deterministic_algorithms ----------------------------------------------------------------------


def test_deterministic_block_removes_the_workspace_variable_it_set(monkeypatch):
    monkeypatch.delenv(CUBLAS_WORKSPACE, raising=False)
    with deterministic_algorithms(True):
        assert os.environ[CUBLAS_WORKSPACE] == ":4096:8"
        assert torch.are_deterministic_algorithms_enabled()
    assert CUBLAS_WORKSPACE not in os.environ
    assert not torch.are_deterministic_algorithms_enabled()


def test_deterministic_block_keeps_and_restores_a_workspace_the_user_set(monkeypatch):
    monkeypatch.setenv(CUBLAS_WORKSPACE, ":16:8")
    with pytest.raises(RuntimeError, match="inside"), deterministic_algorithms(True):
        assert os.environ[CUBLAS_WORKSPACE] == ":16:8"
        os.environ[CUBLAS_WORKSPACE] = ":4096:8"  # code inside the block may change it
        raise RuntimeError("inside the block")
    assert os.environ[CUBLAS_WORKSPACE] == ":16:8"


def test_deterministic_block_after_an_exception_removes_the_variable(monkeypatch):
    monkeypatch.delenv(CUBLAS_WORKSPACE, raising=False)
    with pytest.raises(RuntimeError, match="inside"), deterministic_algorithms(True):
        raise RuntimeError("inside the block")
    assert CUBLAS_WORKSPACE not in os.environ


# ---- quiet_transformers ------------------------------------------------------------------------------


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def hf_logging():
    """transformers' logging module at its default WARNING verbosity, with bars on."""
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_warning()
    hf_logging.enable_progress_bar()
    yield hf_logging
    hf_logging.set_verbosity(level)
    (hf_logging.enable_progress_bar if bars else hf_logging.disable_progress_bar)()


@pytest.fixture
def seen(hf_logging) -> list[str]:
    """The messages that reach a handler on the ``transformers`` logger, as a user's would."""
    handler = ListHandler()
    root = hf_logging.get_logger()
    root.addHandler(handler)
    yield handler.messages
    root.removeHandler(handler)


def child_logger() -> logging.Logger:
    """A new transformers module's logger, like ``transformers.modeling_utils`` first made mid-load."""
    return logging.getLogger(f"transformers.test_runtime_{uuid.uuid4().hex}")


@pytest.fixture
def two_threads():
    """Two worker threads; ``a.submit(f).result()`` runs ``f`` in thread a and waits for it."""
    with ThreadPoolExecutor(1) as a, ThreadPoolExecutor(1) as b:
        yield a, b


def test_quiet_drops_warnings_but_not_errors_and_leaves_the_verbosity(hf_logging, seen):
    with quiet():
        log = child_logger()
        log.warning("new head weights")
        log.error("a real problem")
        assert hf_logging.get_verbosity() == logging.WARNING
    log.warning("after the block")
    assert seen == ["a real problem", "after the block"]
    assert hf_logging.get_verbosity() == logging.WARNING


def test_nested_quiet_blocks_stay_quiet_until_the_outer_one_ends(hf_logging, seen):
    log = child_logger()
    with quiet():
        with quiet():
            log.warning("inner")
        log.warning("outer, after the inner block")
        assert hf_logging.get_verbosity() == logging.WARNING
    log.warning("after both")
    assert seen == ["after both"]


def test_a_warning_from_another_thread_gets_through_while_one_is_quiet(
    hf_logging, seen, two_threads
):
    a, b = two_threads
    log, block = child_logger(), quiet()
    a.submit(block.__enter__).result()
    b.submit(log.warning, "from thread b").result()
    a.submit(log.warning, "from quiet thread a").result()
    log.warning("from the main thread")
    a.submit(block.__exit__, None, None, None).result()
    assert seen == ["from thread b", "from the main thread"]
    assert hf_logging.get_verbosity() == logging.WARNING


def test_overlapping_quiet_threads_do_not_undo_each_others_silence(hf_logging, seen, two_threads):
    a, b = two_threads
    log, block_a, block_b = child_logger(), quiet(), quiet()
    a.submit(block_a.__enter__).result()
    b.submit(block_b.__enter__).result()
    a.submit(block_a.__exit__, None, None, None).result()  # a ends first, b is still quiet
    b.submit(log.warning, "from quiet thread b").result()
    a.submit(log.warning, "from thread a, no longer quiet").result()
    b.submit(block_b.__exit__, None, None, None).result()
    b.submit(log.warning, "from thread b, no longer quiet").result()
    assert seen == ["from thread a, no longer quiet", "from thread b, no longer quiet"]
    assert hf_logging.get_verbosity() == logging.WARNING


def test_quiet_hides_only_this_threads_progress_bars(hf_logging, two_threads):
    a, _ = two_threads
    bar = lambda: hf_logging.tqdm(range(3), file=io.StringIO())  # noqa: E731
    block = quiet()
    a.submit(block.__enter__).result()
    quiet_bar, other_bar = a.submit(bar).result(), bar()
    a.submit(block.__exit__, None, None, None).result()
    assert quiet_bar.disable is True and other_bar.disable is False
    assert list(quiet_bar) == [0, 1, 2]  # a hidden bar still iterates
    assert hf_logging.is_progress_bar_enabled()
    assert bar().disable is False


def test_without_a_tqdm_hook_bars_come_back_when_the_last_quiet_block_ends(
    hf_logging, monkeypatch, two_threads
):
    """Older transformers have only the global switch: it is reference-counted."""
    monkeypatch.delattr(hf_logging, "set_tqdm_hook")
    a, b = two_threads
    block_a, block_b = quiet(), quiet()
    a.submit(block_a.__enter__).result()
    b.submit(block_b.__enter__).result()
    a.submit(block_a.__exit__, None, None, None).result()
    assert not hf_logging.is_progress_bar_enabled()  # b is still quiet
    b.submit(block_b.__exit__, None, None, None).result()
    assert hf_logging.is_progress_bar_enabled()


def resident_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_release_free_heap_gives_the_holes_between_live_blocks_back():
    from bertfit.runtime import _malloc_trim, release_free_heap

    if _malloc_trim() is None:
        pytest.skip("not glibc")
    # 64 KB blocks stay below glibc's mmap threshold: they live on the heap, and freeing every
    # other one leaves holes that glibc keeps but a trim returns
    blocks = [bytearray(64 * 1024) for _ in range(3200)]
    del blocks[::2]
    before = resident_mb()
    release_free_heap()
    assert before - resident_mb() > 50  # about 100 MB of holes
    assert all(len(b) == 64 * 1024 for b in blocks)  # the live blocks are untouched


def test_release_weights_frees_parameters_buffers_and_gradients():
    from bertfit.training.run import release_weights

    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    model(torch.randn(2, 4)).sum().backward()
    release_weights(model)
    assert all(p.numel() == 0 and p.grad is None for p in model.parameters())
    assert all(b.numel() == 0 for b in model.buffers() if b.is_floating_point())
