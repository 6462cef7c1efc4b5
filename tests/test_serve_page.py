"""The page that ``bertfit serve`` shows at ``/``, driven in a real headless Chromium (Playwright)
against the real server on 127.0.0.1: what it shows must be what the API answers."""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bertfit.cli.main import main
from bertfit.config.serve import API_KEY_VARIABLE, ServeConfig
from tests.conftest import marker_rows, write_rows
from tests.test_biencoder import pair_rows, pair_training
from tests.test_cli import FAST, single_run  # noqa: F401  (the shared trained tiny run)
from tests.test_pages import CHROMIUM, FLAGS, not_blank

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(), reason="needs Debian's chromium; .ci/run installs it"
    ),
]
TEXT = "the movie was great and the music too"


@pytest.fixture(autouse=True)
def no_key_from_the_environment(monkeypatch):
    monkeypatch.delenv(API_KEY_VARIABLE, raising=False)
    monkeypatch.setenv("no_proxy", "*")  # httpx must not send 127.0.0.1 through a proxy
    monkeypatch.setenv("NO_PROXY", "*")


@pytest.fixture(scope="module")
def pair_run(tiny_bert, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pair")
    train = write_rows(root / "pairs.jsonl", marker_rows(120, seed=3, pair=True))
    out = root / "run"
    args = ["train", "--train", str(train), "--model", str(tiny_bert), "--output", str(out)]
    columns = ["--text-column", "premise", "--pair-column", "hypothesis", "--dev-fraction", "0.2"]
    assert main([*args, *columns, "--epochs", "1", *FAST[2:]]) == 0
    return out


@pytest.fixture(scope="module")
def bi_encoder_run(tiny_bert, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bi")
    train = write_rows(root / "sts.jsonl", pair_rows(80, 1, "cosine"))
    out = root / "run"
    args = [*pair_training(train, tiny_bert, out, "cosine"), "--dev-fraction", "0.25"]
    assert main([*args, "--epochs", "1", *FAST[2:]]) == 0
    return out


@contextlib.contextmanager
def serving(config: ServeConfig) -> Iterator[str]:
    """The real app under uvicorn in a background thread on a free port; stops on exit."""
    import uvicorn

    from bertfit.serve.app import create_app, load_served

    app = create_app(config, load_served(config))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        assert not thread.is_alive(), "the server did not stop"


@contextlib.contextmanager
def browsing(base: str, loaded: str = "body[data-kind]") -> Iterator[tuple]:
    """(page at ``base``/ once ``loaded`` shows (/info applied), console errors, requests the page
    made); any request that leaves ``base`` is refused and recorded: the page must work offline."""
    pytest.importorskip("playwright.sync_api")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1000, "height": 800})
        errors: list[str] = []
        sent: list = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: sent.append(r))

        def only_the_server(route):
            url = route.request.url
            if url.startswith(base + "/") or url.startswith("data:"):
                route.continue_()
            else:
                errors.append(f"outside request: {url}")
                route.abort()

        page.route("**/*", only_the_server)
        page.goto(base + "/")
        page.wait_for_selector(loaded, state="attached")
        try:
            yield page, errors, sent
        finally:
            browser.close()


def post(base: str, path: str, inputs, key: str | None = None):
    import httpx

    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{base}{path}", json={"inputs": inputs}, headers=headers, timeout=60)


def shown_words(page, selector: str = "#words .word") -> list[tuple[str, float, str]]:
    return page.locator(selector).evaluate_all(
        "els => els.map(e => [e.textContent, parseFloat(e.dataset.score), e.style.background])"
    )


def rgba(css: str) -> list[float]:
    return [float(x) for x in re.findall(r"[\d.]+", css)]


def test_classifier_page_shows_the_api_answers(single_run, tmp_path):  # noqa: F811
    from bertfit.report.explain_page import _colour

    with serving(ServeConfig(run_dir=str(single_run["dir"]))) as base:
        with browsing(base) as (page, errors, _):
            assert page.inner_text("#submit") == "Predict" and page.locator("#pair").is_hidden()
            assert str(single_run["dir"]) in page.inner_text("#title")
            page.fill("#text", TEXT)
            page.press("#text", "Enter")
            page.wait_for_selector("#words .word")
            label = page.inner_text("#label")
            bars = page.locator("#bars .bar-row").all_inner_texts()
            words = shown_words(page)
            assert page.input_value("#text") == TEXT  # Enter submitted, no newline was typed
            page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
            page.set_viewport_size({"width": 360, "height": 740})
            page.screenshot(path=str(tmp_path / "phone.png"), full_page=True)
            widths = page.evaluate("[document.scrollingElement.scrollWidth, window.innerWidth]")
            predicted = post(base, "/predict", TEXT).json()
            explained = post(base, "/explain", TEXT).json()
    assert errors == []
    assert label == str(predicted["label"])
    probabilities = sorted(predicted["probabilities"].items(), key=lambda kv: -kv[1])
    assert len(bars) == len(probabilities) == 2
    for shown, (name, p) in zip(bars, probabilities):  # sorted, one bar per label, percentages
        assert shown.split() == [str(name), f"{100 * p:.1f}%"]
    expected = explained["words"]
    assert [w for w, _, _ in words] == [w["word"] for w in expected] == TEXT.split()
    scale = max(abs(w["integrated_gradients"]) for w in expected)
    for (_, score, background), w in zip(words, expected):
        assert score == pytest.approx(w["integrated_gradients"], abs=1e-5)
        colour = _colour(w["integrated_gradients"], scale, "30,150,60", "210,40,40")
        # the browser keeps alpha in 1/255 steps
        assert rgba(background) == pytest.approx(rgba(colour), abs=1 / 255)
    for name in ("page.png", "phone.png"):
        png = (tmp_path / name).read_bytes()
        assert png.startswith(b"\x89PNG") and not_blank(png)
    assert widths[0] <= widths[1], f"horizontal scroll at phone width: {widths}"


def test_errors_from_the_server_and_the_network_are_shown(single_run):  # noqa: F811
    with serving(ServeConfig(run_dir=str(single_run["dir"]))) as base:
        answer = post(base, "/predict", "   ")
        with browsing(base) as (page, _, _):
            page.fill("#text", "   ")
            page.click("#submit")
            page.wait_for_selector("#error", state="visible")
            shown = page.inner_text("#error")
            result_hidden = page.locator("#result").is_hidden()
            page.route("**/predict", lambda route: route.abort())  # the network fails
            page.fill("#text", TEXT)
            page.press("#text", "Enter")
            page.wait_for_selector("#error:has-text('Could not reach the server')")
    assert answer.status_code == 400 and answer.json()["error"]
    assert answer.json()["error"] in shown and result_hidden


def test_pair_run_has_two_boxes_and_shows_each_texts_words(pair_run):
    premise, hypothesis = "a film with a song", "it was great"
    with serving(ServeConfig(run_dir=str(pair_run))) as base:
        with browsing(base) as (page, errors, _):
            assert page.inner_text("label[for=pair]") == "Pair"
            page.fill("#text", premise)
            page.fill("#pair", hypothesis)
            page.press("#pair", "Enter")
            page.wait_for_selector("#words .word")
            label = page.inner_text("#label")
            second = shown_words(page, '#words [data-segment="1"] .word')
            predicted = post(base, "/predict", [premise, hypothesis]).json()
            explained = post(base, "/explain", [premise, hypothesis]).json()
    assert errors == []
    assert label == str(predicted["label"]) and label in ("yes", "no")
    pair_words = [w["word"] for w in explained["words"] if w["segment"] == 1]
    assert [w for w, _, _ in second] == pair_words == hypothesis.split()


def test_bi_encoder_page_compares_two_texts(bi_encoder_run):
    a, b = "the movie was great", "a great film"
    with serving(ServeConfig(run_dir=str(bi_encoder_run))) as base:
        with browsing(base) as (page, errors, _):
            assert page.inner_text("#submit") == "Compare"
            assert page.inner_text("label[for=pair]") == "Second text"
            page.fill("#text", a)
            page.fill("#pair", b)
            page.press("#text", "Enter")
            page.wait_for_selector("#similarity:not(:empty)")
            shown = float(page.inner_text("#similarity"))
            answer = post(base, "/similarity", {"source_sentence": a, "sentences": [b]})
    assert errors == []
    (expected,) = answer.json()["similarities"]
    assert -1 <= shown <= 1 and round(shown, 3) == pytest.approx(round(expected, 3), abs=1e-3)
    assert abs(shown - expected) < 5e-4


def test_api_key_is_asked_for_then_sent(single_run):  # noqa: F811
    config = ServeConfig(run_dir=str(single_run["dir"]), api_key="k")
    with serving(config) as base:
        refused = post(base, "/predict", TEXT)
        # /info may need the key too: wait for the page to have tried it, not for its answer
        with browsing(base, "body:not([data-state=loading])") as (page, _, sent):
            page.fill("#text", TEXT)
            page.click("#submit")
            page.wait_for_selector("#error", state="visible")
            first_error = page.inner_text("#error")
            key_visible = page.locator("#api-key").is_visible()
            page.fill("#api-key", "k")
            page.click("#submit")
            page.wait_for_selector("#label:not(:empty)")
            label = page.inner_text("#label")
            error_hidden = page.locator("#error").is_hidden()
        predicted = post(base, "/predict", TEXT, key="k").json()
    assert refused.status_code == 401 and refused.json()["error"] in first_error
    assert key_visible and error_hidden and label == str(predicted["label"])
    keyed = [r for r in sent if r.url.endswith("/predict")][-1]
    assert keyed.headers.get("authorization") == "Bearer k"
