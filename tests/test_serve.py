"""``bertfit serve``: every route for each kind of run, the error codes, dynamic batching,
graceful shutdown; in-process (TestClient) and on a real uvicorn on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from bertfit.cli.main import main  # noqa: E402
from bertfit.config.serve import ServeConfig  # noqa: E402
from bertfit.serve.app import create_app, load_served  # noqa: E402
from tests.conftest import free_port, marker_rows, multi_rows, write_rows  # noqa: E402
from tests.test_biencoder import pair_rows, pair_training  # noqa: E402
from tests.test_problems import score_rows  # noqa: E402

QUICK = ["--epochs", "1", "--batch-size", "16", "--lr", "3e-3", "--warmup-ratio", "0"]
QUICK += ["--max-length", "32", "--threads", "1", "--no-progress", "--seed", "1"]


@pytest.fixture(scope="module")
def runs(tiny_bert, tmp_path_factory) -> dict[str, Path]:
    """One tiny finished run of each kind the server serves."""
    root = tmp_path_factory.mktemp("serve")
    made = {}

    def train(name: str, rows: list[dict], *extra: str) -> None:
        data = write_rows(root / f"{name}.jsonl", rows)
        out = root / name
        argv = ["train", "--train", str(data), "--model", str(tiny_bert), "--output", str(out)]
        assert main([*argv, *QUICK, *extra]) == 0
        made[name] = out

    train("classifier", marker_rows(48, seed=1))
    train(
        "pair",
        marker_rows(48, seed=2, pair=True),
        "--text-column",
        "premise",
        "--pair-column",
        "hypothesis",
    )
    train("regression", score_rows(48, 3), "--regression")
    train("multi", multi_rows(48, 4), "--multi-label")
    data = write_rows(root / "bi.jsonl", pair_rows(48, 5, "cosine"))
    bi = root / "bi"
    assert main([*pair_training(data, tiny_bert, bi, "cosine"), *QUICK]) == 0
    made["bi"] = bi
    return made


def client_for(run_dir: Path, **options) -> TestClient:
    config = ServeConfig(run_dir=str(run_dir), access_log=False, **options)
    return TestClient(create_app(config, load_served(config)))


def wait_healthy(client: TestClient, timeout: float = 30) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if client.get("/health").status_code == 200:
            return
        time.sleep(0.02)
    raise AssertionError("the server never became healthy")


@pytest.fixture(scope="module")
def clients(runs):
    """A started app per run (lifespan entered, warmed up)."""
    opened = {}
    for name, run_dir in runs.items():
        client = client_for(run_dir)
        client.__enter__()
        wait_healthy(client)
        opened[name] = client
    yield opened
    for client in opened.values():
        client.__exit__(None, None, None)


def blocked(client: TestClient):
    """Hold the model's worker thread until the returned event is set, so requests queue up."""
    from bertfit.serve.batching import Job

    batcher = client.app.state.batcher
    release, holding = threading.Event(), threading.Event()

    def hold():
        holding.set()
        release.wait(30)

    loop = asyncio.new_event_loop()
    batcher.submit(Job("call", None, loop.create_future(), call=hold))
    assert holding.wait(10)
    return release


def in_threads(count: int, call) -> tuple[list, list[threading.Thread]]:
    answers: list = [None] * count

    def one(i):
        answers[i] = call(i)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    return answers, threads


def wait_queued(client: TestClient, count: int) -> None:
    end = time.time() + 10
    while client.app.state.batcher.waiting < count and time.time() < end:
        time.sleep(0.005)
    assert client.app.state.batcher.waiting == count


# ---- every route, for each kind of run -------------------------------------------------------


@pytest.mark.slow
def test_classifier_routes(clients, runs):
    import bertfit

    c = clients["classifier"]
    one = c.post("/predict", json={"inputs": "a great film"})
    assert one.status_code == 200
    assert set(one.json()) == {"label", "probabilities", "truncated"}
    assert (
        float(one.headers["x-queue-time-ms"]) >= 0 and float(one.headers["x-inference-time-ms"]) > 0
    )
    texts = ["a great film", "the plot was long", "great"]
    many = c.post("/predict", json={"inputs": texts}).json()
    expected = bertfit.load(runs["classifier"], device="cpu").predict(texts)
    assert [r["label"] for r in many] == [r["label"] for r in expected]  # in input order
    for got, want in zip(many, expected):
        for label, p in want["probabilities"].items():
            assert got["probabilities"][label] == pytest.approx(p, abs=2e-3)
    explained = c.post("/explain", json={"inputs": "a great film", "steps": 8}).json()
    assert [w["word"] for w in explained["words"]] == ["a", "great", "film"]
    assert explained["label"] == many[0]["label"] and explained["steps"] == 8
    info = c.get("/info").json()
    assert info["kind"] == "classifier" and info["labels"] == ["neg", "pos"]
    assert info["max_length"] == 32 and info["is_pair"] is False and "accuracy" in info["metrics"]
    assert info["version"] == bertfit.__version__ and info["backend"] == "torch"
    wrong = c.post("/embed", json={"inputs": "a"})
    assert wrong.status_code == 400 and wrong.json()["type"] == "wrong_model"


@pytest.mark.slow
def test_pair_run_takes_pairs_in_each_shape(clients):
    c = clients["pair"]
    as_list = c.post("/predict", json={"inputs": ["a great film", "yes great"]}).json()
    as_dict = c.post(
        "/predict", json={"inputs": {"text": "a great film", "pair": "yes great"}}
    ).json()
    assert as_list["label"] == as_dict["label"]
    many = c.post("/predict", json={"inputs": [["a", "b"], {"text": "c", "pair": "d"}]}).json()
    assert len(many) == 2 and all("label" in r for r in many)
    explained = c.post("/explain", json={"inputs": ["a film", "yes great"], "steps": 4}).json()
    assert {w["segment"] for w in explained["words"]} == {0, 1}
    single = c.post("/predict", json={"inputs": "just one text"})
    assert single.status_code == 400 and "pairs" in single.json()["error"]


@pytest.mark.slow
def test_regression_and_multi_label_answers(clients):
    score = clients["regression"].post("/predict", json={"inputs": ["great great", "a"]}).json()
    assert [set(r) for r in score] == [{"score", "truncated"}] * 2
    multi = clients["multi"].post("/predict", json={"inputs": "great and awful"}).json()
    assert set(multi) == {"labels", "probabilities", "truncated"}
    assert set(multi["probabilities"]) == {"bad", "good"}
    assert clients["multi"].get("/info").json()["problem"] == "multi_label_classification"


@pytest.mark.slow
def test_bi_encoder_routes(clients, runs):
    import bertfit

    b = clients["bi"]
    embedder = bertfit.load(runs["bi"], device="cpu")
    texts = ["a plane takes off", "a man plays a flute"]
    got = np.array(b.post("/embed", json={"inputs": texts}).json()["embeddings"])
    assert got.shape == (2, 32)
    assert np.abs(got - embedder.encode(texts)).max() < 2e-2  # bf16 autocast on either side
    raw = np.array(
        b.post("/embed", json={"inputs": texts, "normalize": False}).json()["embeddings"]
    )
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)
    body = {"inputs": {"source_sentence": texts[0], "sentences": [texts[0], texts[1]]}}
    sims = b.post("/similarity", json=body).json()["similarities"]
    assert sims[0] == pytest.approx(1.0, abs=1e-3) and -1 <= sims[1] <= 1
    openai = b.post("/v1/embeddings", json={"input": texts, "model": "m"}).json()
    assert openai["object"] == "list" and openai["model"] == "m"
    assert [d["index"] for d in openai["data"]] == [0, 1]
    assert openai["usage"]["prompt_tokens"] > 4
    packed = b.post("/v1/embeddings", json={"input": "a", "encoding_format": "base64"}).json()
    vector = np.frombuffer(base64.b64decode(packed["data"][0]["embedding"]), "<f4")
    assert vector.shape == (32,)
    assert b.get("/info").json()["kind"] == "embedder"
    assert b.post("/predict", json={"inputs": "a"}).json()["type"] == "wrong_model"
    tokens = b.post("/v1/embeddings", json={"input": [1, 2, 3]})
    assert tokens.status_code == 400 and "token ids" in tokens.json()["error"]


@pytest.mark.slow
def test_health_metrics_docs_and_page(clients):
    c = clients["classifier"]
    assert c.get("/health").json() == {"status": "ok"}
    c.post("/predict", json={"inputs": "a"})
    text = c.get("/metrics").text
    for name in (
        'bertfit_requests_total{route="/predict",status="200"}',
        "bertfit_queue_size",
        "bertfit_batch_size_bucket",
        "bertfit_batch_tokens_bucket",
        "bertfit_queue_seconds_bucket",
        "bertfit_inference_seconds_bucket",
    ):
        assert name in text
    schema = c.get("/openapi.json").json()
    for route in ("/predict", "/explain", "/embed", "/similarity", "/v1/embeddings", "/health"):
        assert route in schema["paths"]
    docs = c.get("/docs").text  # Swagger UI from bertfit itself: /docs works offline
    assert "/docs-assets/swagger-ui-bundle.js" in docs and "cdn" not in docs.lower()
    assert c.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
    page = c.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "http://" not in page.text and "https://" not in page.text  # nothing from elsewhere


# ---- bad requests: the right 4xx, a JSON error, never a 5xx -----------------------------------

BAD = [
    ({"inputs": ""}, 400, "empty_input"),
    ({"inputs": "   "}, 400, "empty_input"),
    ({"inputs": []}, 400, "empty_input"),
    ({"inputs": ["ok", ""]}, 400, "empty_input"),
    ({"inputs": 5}, 400, "invalid_input"),
    ({"inputs": [1, 2]}, 400, "invalid_input"),
    ({"inputs": None}, 400, "invalid_input"),
    ({"inputs": {"text": "a"}}, 400, "invalid_input"),
    ({"inputs": ["a", "b"] * 20}, 413, "too_many_inputs"),
    ({}, 422, "validation_error"),
    ({"input": "typo"}, 422, "validation_error"),
    ({"inputs": "a", "extra": 1}, 422, "validation_error"),
    ([1, 2], 422, "validation_error"),
    ("just a string", 422, "validation_error"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("body", "status", "kind"), BAD)
def test_bad_predict_bodies(clients, body, status, kind):
    answer = clients["classifier"].post("/predict", json=body)
    assert answer.status_code == status, answer.text
    assert answer.json()["type"] == kind and answer.json()["error"]


@pytest.mark.slow
def test_malformed_requests_of_every_other_kind(clients):
    c, b = clients["classifier"], clients["bi"]
    cases = [
        (
            c.post("/predict", content=b"{not json", headers={"content-type": "application/json"}),
            422,
        ),
        (
            c.post("/predict", content=b"\xff\xfe", headers={"content-type": "application/json"}),
            422,
        ),
        (c.post("/explain", json={"inputs": "a", "steps": 0}), 422),
        (c.post("/explain", json={"inputs": "a", "steps": 10_000}), 422),
        (c.post("/explain", json={"inputs": ["a", "b"]}), 400),
        (c.post("/explain", json={"inputs": "a", "target": "probability"}), 422),
        (b.post("/similarity", json={"inputs": {"source_sentence": "a"}}), 422),
        (b.post("/similarity", json={"inputs": {"source_sentence": "", "sentences": ["b"]}}), 400),
        (b.post("/similarity", json={"inputs": {"source_sentence": "a", "sentences": []}}), 400),
        (b.post("/embed", json={"inputs": [None]}), 400),
        (b.post("/v1/embeddings", json={"input": "a", "dimensions": 7}), 400),
        (b.post("/v1/embeddings", json={"input": "a", "encoding_format": "int"}), 422),
        (
            c.post(
                "/predict",
                content=b"inputs=a",
                headers={"content-type": "application/x-www-form-urlencoded"},
            ),
            415,
        ),
        (c.get("/nowhere"), 404),
        (c.get("/predict"), 405),
    ]
    for answer, status in cases:
        assert answer.status_code == status, answer.text
        assert set(answer.json()) == {"error", "type"}
    assert c.get("/health").status_code == 200  # none of it hurt the server


@pytest.mark.slow
def test_body_size_limit_by_header_and_by_stream(runs):
    with client_for(runs["classifier"], max_body_bytes=200) as c:
        wait_healthy(c)
        big = c.post("/predict", json={"inputs": "word " * 100})
        assert big.status_code == 413 and big.json()["type"] == "payload_too_large"

        def chunks():
            yield b'{"inputs": "'
            yield b"word " * 100
            yield b'"}'

        streamed = c.post(
            "/predict", content=chunks(), headers={"content-type": "application/json"}
        )
        assert streamed.status_code == 413
        assert c.post("/predict", json={"inputs": "short"}).status_code == 200


@pytest.mark.slow
def test_long_texts_are_truncated_and_said_so_or_rejected(runs):
    long = " ".join(["great"] * 100)
    with client_for(runs["classifier"]) as c:
        wait_healthy(c)
        answer = c.post("/predict", json={"inputs": [long, "short"]}).json()
        assert [r["truncated"] for r in answer] == [True, False]
    with client_for(runs["classifier"], reject_long=True) as c:
        wait_healthy(c)
        refused = c.post("/predict", json={"inputs": ["short", long]})
        assert refused.status_code == 400 and refused.json()["type"] == "input_too_long"
        assert "inputs[1]" in refused.json()["error"] and "32" in refused.json()["error"]


@pytest.mark.slow
def test_api_key(runs, monkeypatch):
    with client_for(runs["classifier"], api_key="sesame") as c:
        wait_healthy(c)  # /health stays open for load balancers
        missing = c.post("/predict", json={"inputs": "a"})
        assert missing.status_code == 401 and missing.json()["type"] == "unauthorized"
        wrong = c.get("/info", headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401
        ok = c.post("/predict", json={"inputs": "a"}, headers={"authorization": "Bearer sesame"})
        assert ok.status_code == 200
        assert c.get("/").status_code == 200  # the page asks for the key itself


@pytest.mark.slow
def test_too_many_waiting_requests_get_429(runs):
    with client_for(runs["classifier"], max_concurrent_requests=2) as c:
        wait_healthy(c)
        release = blocked(c)
        answers, threads = in_threads(2, lambda i: c.post("/predict", json={"inputs": f"text {i}"}))
        wait_queued(c, 2 + 0)
        over = c.post("/predict", json={"inputs": "one too many"})
        assert over.status_code == 429 and over.json()["type"] == "overloaded"
        assert over.headers["retry-after"] == "1"
        assert c.get("/health").status_code == 200  # GETs still answer while the model is busy
        release.set()
        for t in threads:
            t.join(30)
        assert [a.status_code for a in answers] == [200, 200]


# ---- dynamic batching ------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(("max_requests", "passes"), [(64, 1), (1, 8)])
def test_concurrent_requests_share_a_forward_pass(runs, max_requests, passes):
    with client_for(runs["classifier"], max_batch_requests=max_requests, max_wait_ms=0) as c:
        wait_healthy(c)
        batcher = c.app.state.batcher
        release = blocked(c)
        before = batcher.forward_calls
        answers, threads = in_threads(
            8, lambda i: c.post("/predict", json={"inputs": f"great {i}"})
        )
        wait_queued(c, 8)
        release.set()
        for t in threads:
            t.join(30)
        assert all(a.status_code == 200 for a in answers)
        assert batcher.forward_calls - before == passes


def test_batches_keep_to_the_token_budget():
    from bertfit.serve.batching import token_chunks

    lengths = np.array([10, 30, 5, 30, 8])
    chunks = token_chunks(lengths, max_tokens=60)
    assert [list(map(int, c)) for c in chunks] == [[1, 3], [0, 4, 2]]  # longest first
    for chunk in chunks:
        assert len(chunk) * lengths[chunk].max() <= 60
    assert [len(c) for c in token_chunks(np.array([100, 3]), 50)] == [1, 1]  # too long: alone


def test_jobs_of_gone_clients_are_dropped_before_compute():
    from bertfit.data.packing import Packed
    from bertfit.serve.batching import Batcher, BatchLimits, Job
    from bertfit.serve.metrics import ServerMetrics

    seen = []

    def compute(kind, packed):
        seen.append(len(packed))
        return np.zeros((len(packed), 2), np.float32)

    def packed(n):
        return Packed(
            np.ones(n * 4, np.int32), np.zeros(n * 4, np.int8), np.arange(0, n * 4 + 1, 4)
        )

    loop = asyncio.new_event_loop()
    batcher = Batcher(compute, BatchLimits(1000, 64, 0.0), ServerMetrics())
    jobs = [Job("logits", packed(n), loop.create_future()) for n in (1, 2, 3)]
    jobs[1].cancelled = True
    for job in jobs:
        batcher.submit(job)
    batcher.start()
    batcher.stop()
    assert seen == [4]  # 1 + 3 rows in one pass; the gone client's 2 never computed
    loop.run_until_complete(asyncio.sleep(0))
    assert jobs[0].future.result().shape == (1, 2) and jobs[2].future.result().shape == (3, 2)
    assert not jobs[1].future.done()
    loop.close()


# ---- the command: errors before binding, a real server, graceful shutdown ---------------------


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: root / "missing", "no such run directory"),
        (lambda root: root, "not a bertfit run directory"),
    ],
)
def test_serve_refuses_what_predict_refuses(tmp_path, capsys, make, message):
    (tmp_path / "notes.txt").write_text("x")
    assert main(["serve", str(make(tmp_path)), "--port", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


@pytest.mark.slow
def test_serve_refuses_a_busy_port(runs, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", str(runs["classifier"]), "--port", str(port)]) == 2
    assert "cannot listen there" in capsys.readouterr().err


@pytest.mark.slow
def test_real_server_answers_then_shuts_down_gracefully(runs):
    import httpx

    port = free_port()
    env = {**os.environ, "BERTFIT_API_KEY": "k"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bertfit", "serve", str(runs["classifier"]), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        headers = {"authorization": "Bearer k"}
        end = time.time() + 60
        while time.time() < end:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        assert httpx.post(url + "/predict", json={"inputs": "a"}).status_code == 401  # key from env
        first = httpx.post(url + "/predict", json={"inputs": "a great film"}, headers=headers)
        assert first.status_code == 200 and "x-inference-time-ms" in first.headers
        # slow explanations in flight when SIGTERM comes: each is still answered
        slow = {"inputs": "a great film with a long plot", "steps": 400}
        answers, threads = in_threads(
            3, lambda i: httpx.post(url + "/explain", json=slow, headers=headers, timeout=60)
        )
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(60)
        assert [a.status_code for a in answers] == [200, 200, 200]
        assert proc.wait(60) == 0
        log = proc.stderr.read()
        assert '"POST /predict" 200' in log and '"POST /explain" 200' in log  # the access log
        assert "stopped" in log and "Traceback" not in log
    finally:
        if proc.poll() is None:
            proc.kill()


def test_serve_names_the_extra_when_fastapi_is_missing(monkeypatch, capsys, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "fastapi" else real(name, *a)
    )
    assert main(["serve", str(tmp_path), "--port", "0"]) == 2
    assert "pip install 'bertfit[serve]'" in capsys.readouterr().err


def test_the_listening_socket_says_tcp_so_answers_are_not_held_by_nagle():
    from bertfit.serve.server import bind

    sock = bind("127.0.0.1", 0)
    try:
        # asyncio sets TCP_NODELAY on accepted connections only when proto is IPPROTO_TCP;
        # with proto 0 every answer waited ~40 ms for the client's delayed ACK (64 ms p50)
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()


def test_a_lone_request_never_waits_but_a_busy_queue_waits_for_more():
    from bertfit.data.packing import Packed
    from bertfit.serve.batching import Batcher, BatchLimits, Job
    from bertfit.serve.metrics import ServerMetrics

    sizes = []

    def compute(kind, packed):
        sizes.append(len(packed))
        return np.zeros((len(packed), 2), np.float32)

    one = lambda: Packed(np.ones(4, np.int32), np.zeros(4, np.int8), np.array([0, 4]))  # noqa: E731
    loop = asyncio.new_event_loop()
    batcher = Batcher(compute, BatchLimits(1000, 64, max_wait=0.3), ServerMetrics())
    batcher.start()
    started = time.perf_counter()
    batcher.submit(Job("logits", one(), loop.create_future()))
    while not sizes:
        time.sleep(0.001)
    assert time.perf_counter() - started < 0.2  # alone: computed at once, no 300 ms wait
    batcher.last_batch_requests = 8  # as after a batch of concurrent requests
    batcher.submit(Job("logits", one(), loop.create_future()))
    time.sleep(0.05)
    batcher.submit(Job("logits", one(), loop.create_future()))  # arrives within the wait
    batcher.stop()
    assert sizes == [1, 2]
    loop.close()


@pytest.mark.slow
def test_a_request_whose_client_left_is_dropped_before_compute(runs):
    import httpx
    import uvicorn

    from bertfit.serve.server import bind

    config = ServeConfig(run_dir=str(runs["classifier"]), access_log=False)
    app = create_app(config, load_served(config))
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        end = time.time() + 30
        while time.time() < end:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        batcher = app.state.batcher

        class Held:  # blocked() wants something with .app.state.batcher
            pass

        held = Held()
        held.app = app
        release = blocked(held)
        before = batcher.forward_calls
        body = b'{"inputs": "a great film"}'
        with socket.create_connection(("127.0.0.1", port)) as raw:
            raw.sendall(
                b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            end = time.time() + 10
            while batcher.waiting < 1 and time.time() < end:
                time.sleep(0.005)
            assert batcher.waiting == 1
        time.sleep(0.3)  # the server notices the closed connection
        release.set()
        end = time.time() + 10
        while "bertfit_dropped_jobs_total 1.0" not in app.state.metrics.text().decode():
            assert time.time() < end, "the gone client's job was not dropped"
            time.sleep(0.02)
        assert batcher.forward_calls == before  # its input never reached the model
        assert (
            httpx.post(f"http://127.0.0.1:{port}/predict", json={"inputs": "a"}).status_code == 200
        )
    finally:
        server.should_exit = True
        thread.join(30)
    assert not thread.is_alive()


@pytest.mark.slow
def test_serve_refuses_an_unfinished_run_as_predict_does(runs, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(runs["classifier"], run)
    (run / "results.json").unlink()
    assert main(["predict", str(run), "--text", "a"]) == 2
    expected = capsys.readouterr().err.strip()
    assert main(["serve", str(run), "--port", "0"]) == 2
    got = capsys.readouterr().err.strip()
    assert got == expected and len(got.splitlines()) == 1 and "did not finish" in got
