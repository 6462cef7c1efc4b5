"""The server's Prometheus metrics, in a registry of its own (two servers in one process, as
tests and searches make, never share counts)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# seconds: from a fraction of a millisecond (one short sentence) to a slow explanation
TIME_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
TOKEN_BUCKETS = (16, 64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536)


class ServerMetrics:
    """Requests by route and status, queue size, batch sizes and tokens, queue and compute time."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "bertfit_requests", "HTTP requests by route and status", ["route", "status"], registry=r
        )
        self.request_seconds = Histogram(
            "bertfit_request_seconds", "time to answer a request", ["route"],
            buckets=TIME_BUCKETS, registry=r,
        )  # fmt: skip
        self.queue_size = Gauge("bertfit_queue_size", "jobs waiting for the model", registry=r)
        self.in_flight = Gauge(
            "bertfit_requests_in_flight", "requests being answered now", registry=r
        )
        self.batch_size = Histogram(
            "bertfit_batch_size", "inputs per forward pass", buckets=SIZE_BUCKETS, registry=r
        )
        self.batch_tokens = Histogram(
            "bertfit_batch_tokens", "padded tokens per forward pass", buckets=TOKEN_BUCKETS,
            registry=r,
        )  # fmt: skip
        self.queue_seconds = Histogram(
            "bertfit_queue_seconds", "time a job waited for the model", buckets=TIME_BUCKETS,
            registry=r,
        )  # fmt: skip
        self.inference_seconds = Histogram(
            "bertfit_inference_seconds", "time of one batch on the model", buckets=TIME_BUCKETS,
            registry=r,
        )  # fmt: skip
        self.dropped = Counter(
            "bertfit_dropped_jobs", "jobs dropped before compute: their client had gone",
            registry=r,
        )  # fmt: skip

    def text(self) -> bytes:
        """The Prometheus text exposition format."""
        return generate_latest(self.registry)
