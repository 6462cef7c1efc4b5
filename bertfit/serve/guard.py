"""What every request passes before a route: the API key, the body size, the concurrency cap;
and what every answer leaves behind: its metrics and one access-log line.

A plain ASGI middleware (not FastAPI's ``@app.middleware``), so it can refuse a body by its
``Content-Length`` before reading it and read a chunked one only up to the limit.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from dataclasses import dataclass

from bertfit.serve.metrics import ServerMetrics

access_log = logging.getLogger("bertfit.serve.access")

# open without the API key: the page (it asks for the key), health checks, the API docs
OPEN_PATHS = {"/", "/health", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/favicon.ico"}
DOCS_ASSETS = "/docs-assets"  # Swagger UI's own files, served by bertfit for offline use
ROUTES = {
    "/",
    "/predict",
    "/explain",
    "/embed",
    "/similarity",
    "/v1/embeddings",
    "/health",
    "/info",
    "/metrics",
    "/docs",
    "/openapi.json",
}


@dataclass
class GuardLimits:
    api_key: str | None
    max_body_bytes: int
    max_concurrent: int
    log_requests: bool = True


def error_body(message: str, kind: str) -> bytes:
    return json.dumps({"error": message, "type": kind}).encode()


class Guard:
    """The ASGI middleware in front of the app."""

    def __init__(self, app, limits: GuardLimits, metrics: ServerMetrics) -> None:
        self.app = app
        self.limits = limits
        self.metrics = metrics
        self.in_flight = 0

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        route = path if path in ROUTES else "other"
        started = time.perf_counter()
        status = {"code": 500}

        async def send_noting_status(message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        refusal = self._refusal(scope, path)
        try:
            if refusal is not None:
                await _send_error(send_noting_status, *refusal)
                return
            self.in_flight += 1
            self.metrics.in_flight.set(self.in_flight)
            try:
                if b"content-length" not in dict(scope.get("headers") or []):
                    receive = await self._buffered(receive)
                    if receive is None:
                        limit = self.limits.max_body_bytes
                        message = f"request body over {limit:,} bytes (--max-body-bytes)"
                        await _send_error(send_noting_status, 413, message, "payload_too_large")
                        return
                await self.app(scope, receive, send_noting_status)
            finally:
                self.in_flight -= 1
                self.metrics.in_flight.set(self.in_flight)
        finally:
            elapsed = time.perf_counter() - started
            self.metrics.requests.labels(route, str(status["code"])).inc()
            self.metrics.request_seconds.labels(route).observe(elapsed)
            if self.limits.log_requests:
                client = scope.get("client") or ("-", 0)
                access_log.info(
                    f'{client[0]} "{scope["method"]} {path}" {status["code"]} {1000 * elapsed:.1f}ms'
                )

    def _refusal(self, scope, path: str) -> tuple[int, str, str] | None:
        """(status, message, type) when the request is refused before the app sees it."""
        headers = dict(scope.get("headers") or [])
        key = self.limits.api_key
        if key and path not in OPEN_PATHS and not path.startswith(DOCS_ASSETS + "/"):
            given = headers.get(b"authorization", b"").decode("latin-1")
            scheme, _, token = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip(), key):
                return (
                    401,
                    "missing or wrong API key: send 'Authorization: Bearer KEY'",
                    "unauthorized",
                )
        length = headers.get(b"content-length")
        if length is not None:
            try:
                size = int(length)
            except ValueError:
                return 400, "content-length is not a number", "invalid_request"
            if size > self.limits.max_body_bytes:
                limit = self.limits.max_body_bytes
                return (
                    413,
                    f"request body of {size:,} bytes is over {limit:,} (--max-body-bytes)",
                    "payload_too_large",
                )
        if scope["method"] == "POST" and self.in_flight >= self.limits.max_concurrent:
            return (
                429,
                f"over {self.limits.max_concurrent} requests are waiting (--max-concurrent-requests); retry shortly",
                "overloaded",
            )
        return None

    async def _buffered(self, receive):
        """For a body of unknown length (chunked): read it whole, up to the limit, and give the
        app a ``receive`` that replays it (None when it is over the limit)."""
        chunks, seen = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                chunks.append(message)  # the client left: pass that on
                break
            seen += len(message.get("body", b""))
            if seen > self.limits.max_body_bytes:
                return None
            chunks.append(message)
            if not message.get("more_body", False):
                break
        body = b"".join(m.get("body", b"") for m in chunks if m["type"] == "http.request")
        replay = [{"type": "http.request", "body": body, "more_body": False}]
        replay += [m for m in chunks if m["type"] != "http.request"]

        async def replayed():
            return replay.pop(0) if replay else await receive()

        return replayed


async def _send_error(send, status: int, message: str, kind: str) -> None:
    body = error_body(message, kind)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    if status == 429:
        headers.append((b"retry-after", b"1"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
