"""Dynamic batching: concurrent requests share forward passes, computed off the event loop.

Requests put jobs on a queue; one worker thread owns the model. Whenever the model is free it
takes the oldest job, adds the next jobs of the same kind while the batch stays within the
padded-token budget (rows x longest row) and the request cap, waits up to ``max_wait`` for more
when there is room, drops jobs whose client has gone, sorts the inputs by length and runs them.
Results go back to each request's event loop through its future.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bertfit.data.packing import Packed, budget_cuts
from bertfit.errors import BertfitError
from bertfit.serve.metrics import ServerMetrics

log = logging.getLogger("bertfit.serve")

# compute(kind, packed) -> one output row per packed input
Compute = Callable[[str, Packed], np.ndarray]


@dataclass
class Job:
    """One request's inputs (or, for ``call`` jobs such as explain, a function to run alone)."""

    kind: str
    packed: Packed | None
    future: asyncio.Future
    call: Callable[[], Any] | None = None
    enqueued: float = field(default_factory=time.perf_counter)
    started: float | None = None
    finished: float | None = None
    cancelled: bool = False  # the client went away: skip the compute

    @property
    def rows(self) -> int:
        return 0 if self.packed is None else len(self.packed)

    @property
    def longest(self) -> int:
        return 0 if self.packed is None or not len(self.packed) else int(self.packed.lengths.max())

    @property
    def queue_ms(self) -> float:
        return 1000 * ((self.started or time.perf_counter()) - self.enqueued)

    @property
    def inference_ms(self) -> float:
        if self.started is None or self.finished is None:
            return 0.0
        return 1000 * (self.finished - self.started)


@dataclass
class BatchLimits:
    max_tokens: int
    max_requests: int
    max_wait: float  # seconds


class Batcher:
    """The queue and the worker thread that owns the model."""

    def __init__(self, compute: Compute, limits: BatchLimits, metrics: ServerMetrics) -> None:
        self.compute = compute
        self.limits = limits
        self.metrics = metrics
        self.queue: deque[Job] = deque()
        self.ready = threading.Condition()
        self.stopping = False
        self.thread: threading.Thread | None = None
        self.forward_calls = 0  # forward passes run (tests check that requests shared them)
        self.last_batch_requests = 0

    # --- the event-loop side -------------------------------------------------------------
    def start(self, first: Callable[[], None] | None = None) -> None:
        """Start the worker; ``first`` (the warm-up) runs in it before any job."""
        self.thread = threading.Thread(
            target=self._work, args=(first,), name="bertfit-batcher", daemon=True
        )
        self.thread.start()

    def submit(self, job: Job) -> None:
        with self.ready:
            self.queue.append(job)
            self.metrics.queue_size.set(len(self.queue))
            self.ready.notify()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the queued jobs, then end the worker."""
        with self.ready:
            self.stopping = True
            self.ready.notify()
        if self.thread is not None:
            self.thread.join(timeout)

    @property
    def waiting(self) -> int:
        return len(self.queue)

    # --- the worker side -----------------------------------------------------------------
    def _work(self, first: Callable[[], None] | None) -> None:
        if first is not None:
            try:
                first()
            except Exception:  # a failed warm-up leaves the server unhealthy, not dead
                log.exception("warm-up failed")
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            self._run(batch)

    def _next_batch(self) -> list[Job] | None:
        """The next jobs to run together (None once stopping with nothing queued)."""
        with self.ready:
            while not self.queue:
                if self.stopping:
                    return None
                self.ready.wait()
            batch = [self.queue.popleft()]
            if batch[0].kind == "call":
                self.metrics.queue_size.set(len(self.queue))
                return batch
            # wait for more only under concurrent load (the last batch held several requests):
            # then the clients answered by the last batch but one are sending again, and waiting
            # a few ms for them doubles the batch; a lone client never waits
            wait = self.limits.max_wait if self.last_batch_requests > 1 else 0.0
            deadline = time.perf_counter() + wait
            while True:
                self._take_fitting(batch)
                room = len(batch) < self.limits.max_requests
                left = deadline - time.perf_counter()
                if not room or left <= 0 or self.stopping or self._blocked(batch):
                    break
                self.ready.wait(left)
            self.metrics.queue_size.set(len(self.queue))
            self.last_batch_requests = len(batch)
            return batch

    def _fits(self, batch: list[Job], job: Job) -> bool:
        rows = sum(j.rows for j in batch) + job.rows
        longest = max(job.longest, *(j.longest for j in batch))
        return rows * longest <= self.limits.max_tokens

    def _take_fitting(self, batch: list[Job]) -> None:
        """Move the queued jobs of the batch's kind that fit into it (others keep their place)."""
        kept: deque[Job] = deque()
        while self.queue and len(batch) < self.limits.max_requests:
            job = self.queue.popleft()
            if job.kind == batch[0].kind and self._fits(batch, job):
                batch.append(job)
            else:
                kept.append(job)
                if job.kind == batch[0].kind:
                    break  # the oldest job that does not fit goes first in the next batch
        kept.extend(self.queue)
        self.queue = kept

    def _blocked(self, batch: list[Job]) -> bool:
        """A job of the batch's kind is waiting that does not fit: waiting longer is no use."""
        return any(job.kind == batch[0].kind for job in self.queue)

    def _run(self, batch: list[Job]) -> None:
        live = [job for job in batch if not job.cancelled and not job.future.cancelled()]
        dropped = len(batch) - len(live)
        if dropped:
            self.metrics.dropped.inc(dropped)
        if not live:
            return
        started = time.perf_counter()
        for job in live:
            job.started = started
            self.metrics.queue_seconds.observe(started - job.enqueued)
        try:
            outputs = self._outputs(live)
        except BertfitError as err:  # a request the model cannot answer (a 400), not a fault
            outputs = [err] * len(live)
        except Exception as err:  # noqa: BLE001 - handed to the requests, which answer 500
            log.exception("inference failed")
            outputs = [err] * len(live)
        finished = time.perf_counter()
        self.metrics.inference_seconds.observe(finished - started)
        for job, output in zip(live, outputs):
            job.finished = finished
            _resolve(job.future, output)

    def _outputs(self, jobs: list[Job]) -> list[Any]:
        if jobs[0].kind == "call":
            return [jobs[0].call()]
        merged, sizes = merge_packed([job.packed for job in jobs])
        parts = []
        for chunk in token_chunks(merged.lengths, self.limits.max_tokens):
            part = merged.take(chunk)
            self.forward_calls += 1
            self.metrics.batch_size.observe(len(chunk))
            self.metrics.batch_tokens.observe(len(chunk) * int(part.lengths.max()))
            parts.append((chunk, self.compute(jobs[0].kind, part)))
        width = parts[0][1].shape[1]
        rows = np.empty((len(merged), width), dtype=np.float32)
        for chunk, out in parts:
            rows[chunk] = out
        bounds = np.cumsum([0, *sizes])
        return [rows[bounds[i] : bounds[i + 1]] for i in range(len(jobs))]


def _resolve(future: asyncio.Future, output: Any) -> None:
    """Hand ``output`` (or an exception) to the future, on the loop that owns it."""

    def settle() -> None:
        if future.done():
            return
        if isinstance(output, BaseException):
            future.set_exception(output)
        else:
            future.set_result(output)

    try:
        future.get_loop().call_soon_threadsafe(settle)
    except RuntimeError:
        pass  # the loop is closed: nobody is waiting any more


def merge_packed(parts: list[Packed]) -> tuple[Packed, list[int]]:
    """One ``Packed`` of all the parts' examples, in order, and how many each part gave."""
    offsets = [np.zeros(1, dtype=np.int64)]
    base = 0
    for part in parts:
        offsets.append(part.offsets[1:] + base)
        base += int(part.offsets[-1])
    merged = Packed(
        np.concatenate([part.ids for part in parts]),
        np.concatenate([part.types for part in parts]),
        np.concatenate(offsets),
    )
    return merged, [len(part) for part in parts]


# what one more forward pass costs beyond its tokens, in padded tokens: small passes run a CPU's
# matrix units poorly (serving SST-2 at 32 clients, 64 split batches into passes of 7 rows and
# 256 into 12, which computed 1,000 sentences in 5.7-6.0 s against 6.0-6.6 s)
PASS_OVERHEAD_TOKENS = 256
EXACT_SPLIT_ROWS = 256  # longer batches are cut greedily (the exact split is quadratic)


def token_chunks(
    lengths: np.ndarray, max_tokens: int, overhead: int = PASS_OVERHEAD_TOKENS
) -> list[np.ndarray]:
    """Indices sorted by length, cut into forward passes of rows x longest <= ``max_tokens``
    (a single longer row goes alone) that waste the least compute on padding.

    Concurrent requests mix short and long texts; one pass pads every row to the longest, so
    a batch of SST-2 sentences was padded to twice its tokens. The cut minimises padded tokens
    plus ``overhead`` per pass over all splits of the sorted rows (dynamic programming).
    """
    order = np.argsort(-lengths, kind="stable")
    sorted_lengths = [int(n) for n in lengths[order]]
    if len(order) > EXACT_SPLIT_ROWS:
        return [order[a:b] for a, b in budget_cuts(sorted_lengths, max_tokens)]
    n = len(order)
    best = [0.0] + [float("inf")] * n
    cut = [0] * (n + 1)
    for end in range(1, n + 1):
        for start in range(end - 1, -1, -1):  # the chunk [start, end) is padded to lengths[start]
            rows = end - start
            if rows > 1 and rows * sorted_lengths[start] > max_tokens:
                break
            cost = best[start] + rows * sorted_lengths[start] + overhead
            if cost < best[end]:
                best[end], cut[end] = cost, start
    chunks, end = [], n
    while end > 0:
        chunks.append(order[cut[end] : end])
        end = cut[end]
    return chunks[::-1]
