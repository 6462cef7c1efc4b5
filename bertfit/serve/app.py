"""The FastAPI app of ``bertfit serve``: routes, errors as ``{"error", "type"}``, the page.

``create_app(config, served)`` builds an app around a loaded model; everything it keeps (the
batcher, the metrics, the ready flag) lives in that app, so many apps can share one process.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import importlib.resources
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from bertfit import __version__
from bertfit.config.serve import ServeConfig
from bertfit.data.packing import Packed
from bertfit.errors import BertfitError
from bertfit.serve.batching import Batcher, BatchLimits, Job
from bertfit.serve.guard import DOCS_ASSETS, Guard, GuardLimits
from bertfit.serve.metrics import ServerMetrics
from bertfit.serve.requests import (
    EmbedRequest,
    ExplainRequest,
    InputError,
    OpenAIEmbeddingRequest,
    PredictRequest,
    SimilarityRequest,
    explain_inputs,
    predict_inputs,
    text_inputs,
)
from bertfit.serve.served import Served, load_served

__all__ = ["create_app", "load_served"]

# what each route expects of its inputs, said when a body's inputs have the wrong type
SHAPES = {
    "/predict": "a text or a list of texts (pair runs: [text, pair], {text, pair} or a list of them)",
    "/explain": "one text (pair runs: [text, pair] or {text, pair})",
    "/embed": "a text or a list of texts",
    "/similarity": '{"source_sentence": text, "sentences": [texts]}',
    "/v1/embeddings": "a text or a list of texts",
}


class ClientGone(Exception):
    """The client closed the connection before its answer was ready."""


def default_batch_tokens(served: Served) -> int:
    """Padded tokens per forward pass: enough rows to keep a CPU's cores busy, many more on a GPU."""
    device = served.run.device if served.run is not None else served.embedder.device
    return 65536 if device.type == "cuda" else 8192


def create_app(config: ServeConfig, served: Served) -> FastAPI:
    """The app serving ``served`` under ``config``'s batching and limits."""
    metrics = ServerMetrics()
    limits = BatchLimits(
        max_tokens=config.max_batch_tokens or default_batch_tokens(served),
        max_requests=config.max_batch_requests,
        max_wait=config.max_wait_ms / 1000,
    )
    batcher = Batcher(served.compute, limits, metrics)
    state = {"ready": False, "stopping": False}

    def warm_up() -> None:
        rows = max(1, min(limits.max_requests, limits.max_tokens // served.max_length))
        served.compute(
            "logits" if served.run is not None else "normalized", served.warmup_packed(rows)
        )
        state["ready"] = True

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start(warm_up)
        try:
            yield
        finally:
            state["stopping"] = True
            await asyncio.to_thread(batcher.stop)  # queued requests are answered first

    assets = swagger_assets()
    app = FastAPI(
        title="bertfit",
        version=__version__,
        summary=f"{served.name}: a {served.info()['problem'].replace('_', ' ')} model",
        lifespan=lifespan,
        docs_url=None if assets else "/docs",
        redoc_url=None,
    )
    if assets:
        add_offline_docs(app, assets)
    app.state.batcher = batcher
    app.state.served = served
    app.state.metrics = metrics
    add_error_handlers(app)
    add_routes(app, config, served, batcher, state)
    app.add_middleware(
        Guard,
        limits=GuardLimits(
            config.api_key, config.max_body_bytes, config.max_concurrent_requests, config.access_log
        ),
        metrics=metrics,
    )
    return app


def swagger_assets() -> str | None:
    """The folder of Swagger UI's files from the ``swagger-ui-bundle`` package, if installed:
    FastAPI's default /docs page loads them from a CDN, which an offline machine cannot reach."""
    try:
        import swagger_ui_bundle
    except ImportError:
        return None
    return str(swagger_ui_bundle.swagger_ui_path)


def add_offline_docs(app: FastAPI, assets: str) -> None:
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles

    app.mount(DOCS_ASSETS, StaticFiles(directory=assets), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="bertfit API",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png",
        )


def error(status: int, message: str, kind: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "type": kind}, status_code=status, headers=headers)


def add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(InputError)
    async def on_input_error(request: Request, err: InputError):
        return error(err.status, str(err), err.kind)

    @app.exception_handler(BertfitError)
    async def on_bertfit_error(request: Request, err: BertfitError):
        return error(400, str(err), "invalid_input")

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, err: RequestValidationError):
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind and kind != "application/json" and not kind.endswith("+json"):
            message = f"send the body as JSON with 'Content-Type: application/json', not {kind}"
            return error(415, message, "unsupported_media_type")
        return validation_error(request.url.path, err.errors())

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, err: StarletteHTTPException):
        kind = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code, "http_error")
        return error(err.status_code, f"{request.method} {request.url.path}: {err.detail}", kind)


def validation_error(path: str, errors: list[dict]) -> JSONResponse:
    """Inputs of the wrong type are a 400 saying what the route takes; any other schema
    mismatch (not JSON, a missing or unknown field, a bad option) is a 422 naming the field."""
    first = errors[0] if errors else {"loc": ("body",), "msg": "invalid body"}
    loc = [str(part) for part in first.get("loc", ()) if part != "body"]
    if loc and loc[0] in ("inputs", "input") and first.get("type") != "missing":
        return error(400, f"{loc[0]}: expected {SHAPES.get(path, 'texts')}", "invalid_input")
    if first.get("type") == "json_invalid":
        return error(422, "body: not valid JSON", "invalid_json")
    where = ".".join(loc) or "body"
    return error(422, f"{where}: {first.get('msg', 'invalid')}", "validation_error")


async def _disconnected(request: Request) -> None:
    """Return once the client has closed the connection."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def run_job(request: Request, batcher: Batcher, job: Job) -> Any:
    """Queue ``job`` and wait for its output; a client that leaves first has its job dropped."""
    batcher.submit(job)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({job.future, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if not job.future.done():
        job.cancelled = True
        raise ClientGone
    return job.future.result()


def timing_headers(job: Job) -> dict[str, str]:
    return {
        "x-queue-time-ms": f"{job.queue_ms:.2f}",
        "x-inference-time-ms": f"{job.inference_ms:.2f}",
    }


def check_long(packed: Packed, served: Served, reject: bool, names: list[str]) -> list[bool]:
    """Which inputs were cut to the max length; with ``--reject-long`` a cut one is a 400."""
    cut = packed.truncated
    if reject and cut.any():
        i = int(np.flatnonzero(cut)[0])
        raise InputError(
            f"{names[i]}: {int(packed.full_lengths[i])} tokens, more than the model's "
            f"{served.max_length} (the server rejects long texts: --reject-long)",
            kind="input_too_long",
        )
    return [bool(c) for c in cut]


def new_job(kind: str, packed: Packed | None) -> Job:
    return Job(kind, packed, asyncio.get_running_loop().create_future())


def need(served: Served, kind: str, route: str) -> None:
    """A 400 when the route is not for this kind of model."""
    if served.kind != kind:
        other = (
            "a classifier run: use /predict and /explain"
            if served.kind == "classifier"
            else "an embedder: use /embed, /similarity and /v1/embeddings"
        )
        raise InputError(f"{route}: {served.name} is {other}", kind="wrong_model")


def add_routes(app: FastAPI, config: ServeConfig, served: Served, batcher: Batcher, state: dict):
    add_status_routes(app, config, served, state)
    add_classifier_routes(app, config, served, batcher)
    add_embedding_routes(app, config, served, batcher)


def add_status_routes(app: FastAPI, config: ServeConfig, served: Served, state: dict) -> None:
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        html = importlib.resources.files("bertfit.serve").joinpath("page.html").read_text("utf-8")
        return HTMLResponse(html)

    @app.get("/health", summary="503 until the model is loaded and warmed up, then 200")
    async def health():
        if state["stopping"]:
            return error(503, "the server is shutting down", "unavailable")
        if not state["ready"]:
            return error(503, "the model is warming up", "unavailable")
        return {"status": "ok"}

    @app.get("/info", summary="the run, base model, labels, problem, max_length, metrics")
    async def info():
        return {**served.info(), "auth": bool(config.api_key)}

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def prometheus():
        return Response(metrics_text(app), media_type="text/plain; version=0.0.4")


def add_classifier_routes(
    app: FastAPI, config: ServeConfig, served: Served, batcher: Batcher
) -> None:
    @app.post("/predict", summary="labels with probabilities, labels over threshold, or a score")
    async def predict(body: PredictRequest, request: Request):
        need(served, "classifier", "/predict")
        texts, pairs, single = predict_inputs(body.inputs, served.is_pair, config.max_client_batch)
        packed = served.pack(texts, pairs)
        names = ["inputs"] if single else [f"inputs[{i}]" for i in range(len(texts))]
        cut = check_long(packed, served, config.reject_long, names)
        job = new_job("logits", packed)
        try:
            logits = await run_job(request, batcher, job)
        except ClientGone:
            return Response(status_code=499)
        records = [{**record, "truncated": c} for record, c in zip(served.run.records(logits), cut)]
        return JSONResponse(records[0] if single else records, headers=timing_headers(job))

    @app.post("/explain", summary="word scores: attention and integrated gradients")
    async def explain(body: ExplainRequest, request: Request):
        from bertfit.inference.explain import explain as explain_one

        need(served, "classifier", "/explain")
        text, pair = explain_inputs(body.inputs, served.is_pair)
        job = new_job("call", None)
        job.call = lambda: explain_one(served.run, text, pair, body.steps, body.target)
        try:
            result = await run_job(request, batcher, job)
        except ClientGone:
            return Response(status_code=499)
        return JSONResponse(result, headers=timing_headers(job))


def add_embedding_routes(
    app: FastAPI, config: ServeConfig, served: Served, batcher: Batcher
) -> None:
    async def vectors(request: Request, texts: list[str], normalize: bool):
        """(vectors or None if the client left, job, truncated flags, packed inputs)."""
        packed = served.pack(texts)
        names = [f"inputs[{i}]" for i in range(len(texts))]
        cut = check_long(packed, served, config.reject_long, names)
        job = new_job("normalized" if normalize else "vectors", packed)
        try:
            return await run_job(request, batcher, job), job, cut, packed
        except ClientGone:
            return None, job, cut, packed

    @app.post("/embed", summary="sentence vectors")
    async def embed(body: EmbedRequest, request: Request):
        need(served, "embedder", "/embed")
        texts, _ = text_inputs(body.inputs, config.max_client_batch)
        normalize = served.normalizes if body.normalize is None else body.normalize
        rows, job, cut, _ = await vectors(request, texts, normalize)
        if rows is None:
            return Response(status_code=499)
        answer = {"embeddings": rows.tolist(), "dimensions": int(rows.shape[1]), "truncated": cut}
        return JSONResponse(answer, headers=timing_headers(job))

    @app.post("/similarity", summary="cosine similarity of a sentence with each of others")
    async def similarity(body: SimilarityRequest, request: Request):
        need(served, "embedder", "/similarity")
        source = text_inputs(body.inputs.source_sentence, 1, "inputs.source_sentence")[0]
        others, _ = text_inputs(body.inputs.sentences, config.max_client_batch, "inputs.sentences")
        rows, job, _, _ = await vectors(request, source + others, True)
        if rows is None:
            return Response(status_code=499)
        scores = [round(float(s), 6) for s in rows[1:] @ rows[0]]
        return JSONResponse({"similarities": scores}, headers=timing_headers(job))

    @app.post("/v1/embeddings", summary="embeddings in the OpenAI format")
    async def openai_embeddings(body: OpenAIEmbeddingRequest, request: Request):
        need(served, "embedder", "/v1/embeddings")
        if isinstance(body.input, list) and body.input and not isinstance(body.input[0], str):
            raise InputError("input: token ids are not accepted; send a text or a list of texts")
        texts, _ = text_inputs(body.input, config.max_client_batch, "input")
        width = int(served.embedder.model.config.hidden_size)
        if body.dimensions is not None and body.dimensions != width:
            raise InputError(f"dimensions: this model gives {width}-dimensional vectors")
        rows, job, _, packed = await vectors(request, texts, True)
        if rows is None:
            return Response(status_code=499)
        return JSONResponse(
            openai_answer(rows, body, served.name, packed), headers=timing_headers(job)
        )


def openai_answer(
    rows: np.ndarray, body: OpenAIEmbeddingRequest, name: str, packed: Packed
) -> dict:
    tokens = int(packed.lengths.sum())
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": _encoded(row, body.encoding_format)}
            for i, row in enumerate(rows)
        ],
        "model": body.model or name,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _encoded(row: np.ndarray, encoding: str):
    """A vector as OpenAI sends it: a list of floats, or base64 of little-endian float32."""
    if encoding == "base64":
        return base64.b64encode(row.astype("<f4").tobytes()).decode("ascii")
    return row.tolist()


def metrics_text(app: FastAPI) -> bytes:
    metrics: ServerMetrics = app.state.metrics
    metrics.queue_size.set(app.state.batcher.waiting)
    return metrics.text()
