"""The config of ``bertfit serve``: the run to serve, where to listen, batching and limits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bertfit.config.fields import backend_field, device_field, option, raise_if

API_KEY_VARIABLE = "BERTFIT_API_KEY"


@dataclass
class ServeConfig:
    """Serve a run over HTTP: predict, explain, embed, similarity, OpenAI embeddings, a web page."""

    run_dir: str = option(
        None,
        "run directory written by 'bertfit train', or an encoder to embed with (default, a folder)",
        positional=True,
    )
    host: str = option("127.0.0.1", "address to listen on (0.0.0.0: every interface)")
    port: int = option(8000, "port to listen on (0: any free port)")
    backend: Literal["torch", "onnx"] = backend_field()
    device: str = device_field()
    threads: int | None = option(None, "CPU threads for inference [default: torch's]")
    max_batch_tokens: int | None = option(
        None,
        "padded tokens in one forward pass [default: 8192 on a CPU, 65536 on a GPU]",
    )
    max_batch_requests: int = option(64, "requests grouped into one forward pass at most")
    max_wait_ms: float = option(
        5.0,
        "under concurrent load, how long a batch that could take more waits for them, in "
        "milliseconds (a lone client never waits)",
    )
    max_concurrent_requests: int = option(
        512, "requests waiting or computing at once; more get 429"
    )
    max_client_batch: int = option(32, "inputs in one request at most; more get 413")
    max_body_bytes: int = option(2_000_000, "request body size at most; more gets 413")
    reject_long: bool = option(
        False, "answer 400 to a text longer than the run's max length instead of truncating it"
    )
    api_key: str | None = option(
        None, f"require 'Authorization: Bearer KEY' [default: ${API_KEY_VARIABLE} if set]"
    )
    access_log: bool = option(True, "one log line per request on stderr")

    def validate(self) -> ServeConfig:
        problems = []
        if not 0 <= self.port <= 65535:
            problems.append(f"--port must be 0 to 65535, got {self.port}")
        for name in ("max_batch_requests", "max_concurrent_requests", "max_client_batch"):
            if getattr(self, name) < 1:
                problems.append(f"--{name.replace('_', '-')} must be at least 1")
        if self.max_batch_tokens is not None and self.max_batch_tokens < 16:
            problems.append(f"--max-batch-tokens must be at least 16, got {self.max_batch_tokens}")
        if self.max_body_bytes < 64:
            problems.append(f"--max-body-bytes must be at least 64, got {self.max_body_bytes}")
        if self.max_wait_ms < 0:
            problems.append(f"--max-wait-ms must be 0 or more, got {self.max_wait_ms}")
        if self.threads is not None and self.threads < 1:
            problems.append(f"--threads must be at least 1, got {self.threads}")
        raise_if(problems)
        return self
