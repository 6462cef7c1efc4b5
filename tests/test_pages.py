"""Pages open in a real headless Chromium (installed by .ci/run), driven by Playwright."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from bertfit.cli.main import main
from tests.test_cli import single_run  # noqa: F401  (the shared trained tiny run)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="needs Debian's chromium; .ci/run installs it"
)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
]


def open_page(path: Path):
    """(page texts and attributes, console errors, screenshot PNG bytes) of a local page."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.route(
            "**/*", lambda r: r.continue_() if r.request.url.startswith("file:") else r.abort()
        )
        page.goto(path.resolve().as_uri())
        spans = page.locator("span.w").evaluate_all(
            "els => els.map(e => [e.dataset.method, e.textContent, parseFloat(e.dataset.score)])"
        )
        shot = page.screenshot(full_page=True)
        browser.close()
    return spans, errors, shot


def images_loaded(page) -> list[bool]:
    """For each image of an open page: whether it loaded and has pixels."""
    return page.locator("img").evaluate_all("els => els.map(e => e.complete && e.naturalWidth > 0)")


def not_blank(png: bytes) -> bool:
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    return len(image.resize((200, 150)).getcolors(maxcolors=1 << 16) or []) > 20


@pytest.mark.slow
def test_explanation_page_renders_with_its_scores(single_run, tmp_path, capsys):  # noqa: F811
    page = tmp_path / "why.html"
    args = ["explain", str(single_run["dir"]), "--text", "great scene", "--steps", "10"]
    assert main([*args, "--output", str(page), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert page.is_file() and (tmp_path / "why.png").is_file()
    assert "<script" not in page.read_text() and "http" not in page.read_text()  # self-contained
    spans, errors, shot = open_page(page)
    assert errors == []
    ig = [(word, score) for method, word, score in spans if method == "integrated_gradients"]
    expected = [(w["word"], w["integrated_gradients"]) for w in result["words"]]
    assert [w for w, _ in ig] == [w for w, _ in expected] == ["great", "scene"]
    assert all(abs(a - b) < 1e-5 for (_, a), (_, b) in zip(ig, expected))
    assert {m for m, _, _ in spans} == {"integrated_gradients", "attention"}
    assert not_blank(shot)
    assert not_blank((tmp_path / "why.png").read_bytes())


def test_explain_output_must_be_html(single_run, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "why.txt"
    assert main(["explain", str(single_run["dir"]), "--text", "x", "--output", str(out)]) == 2
    assert "--output must end in .html" in capsys.readouterr().err and not out.exists()


@pytest.mark.slow
def test_run_report_has_every_part_and_renders(single_run, tmp_path):  # noqa: F811
    from playwright.sync_api import sync_playwright

    run = single_run["dir"]
    for name in (
        "report.html",
        "loss.png",
        "learning_rate.png",
        "throughput.png",
        "metrics.png",
        "confusion.png",
        "calibration.png",
        "dev_predictions.jsonl",
        "steps.jsonl",
    ):
        assert (run / name).is_file(), name
    (run / "report.html").unlink()
    assert main(["report", str(run)]) == 0  # rebuilt from the run's own files
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto((run / "report.html").resolve().as_uri())
        sections = page.locator("h2").all_inner_texts()
        loaded = images_loaded(page)
        per_class = page.locator("#per-class + table tr").count()
        shot = page.screenshot(full_page=True)
        browser.close()
    assert errors == [] and len(loaded) == 6 and all(loaded)
    assert any("Per class" in s for s in sections) and any(
        "confidently wrong" in s for s in sections
    )
    assert per_class == 3  # header + neg + pos
    assert not_blank(shot)


def test_calibration_error_on_exact_numbers():
    from bertfit.report.plots import expected_calibration_error

    # bin 0.9-1.0: confidence 0.95, all right -> gap 0.05; bin 0.6-0.7: 0.65, half right -> 0.15
    ece, table = expected_calibration_error([0.95, 0.95, 0.65, 0.65], [1, 1, 1, 0])
    assert ece == pytest.approx(0.5 * 0.05 + 0.5 * 0.15)
    assert [b["n"] for b in table] == [2, 2]


@pytest.mark.slow
def test_compare_two_runs_page_and_paired_test(single_run, tiny_bert, tmp_path, capsys):  # noqa: F811
    from playwright.sync_api import sync_playwright

    from tests.test_cli import FAST

    train = single_run["root"] / "train.csv"
    other = tmp_path / "other"
    args = [
        "train",
        "--train",
        str(train),
        "--dev",
        str(single_run["dev"]),
        "--model",
        str(tiny_bert),
    ]
    assert main([*args, "--output", str(other), *FAST[:-1], "7", "--epochs", "1"]) == 0
    page = tmp_path / "cmp.html"
    capsys.readouterr()
    runs = [str(single_run["dir"]), str(other)]
    assert (
        main(["compare", *runs, "--data", str(single_run["dev"]), "--output", str(page), "--json"])
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    (test,) = out["paired"]
    assert (
        test["n"] == 100
        and 0 <= test["p_value"] <= 1
        and test["ci"][0] <= test["difference"] <= test["ci"][1]
    )
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        view = browser.new_page()
        errors: list[str] = []
        view.on("pageerror", lambda e: errors.append(str(e)))
        view.goto(page.resolve().as_uri())
        loaded = view.locator("img").evaluate_all(
            "els => els.map(e => e.complete && e.naturalWidth > 0)"
        )
        paired_rows = view.locator("#paired + table tr").count()
        browser.close()
    assert errors == [] and loaded == [True, True] and paired_rows == 2
    assert main(["compare", runs[0], "--output", str(page)]) == 2


def test_paired_bootstrap_on_known_cases():
    from bertfit.evaluation.metrics import classification_metrics, paired_bootstrap

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    good = np.where(rng.random(400) < 0.9, y, 1 - y)
    bad = np.where(rng.random(400) < 0.6, y, 1 - y)
    score = lambda pred: lambda i: classification_metrics(y[i], pred[i], ["a", "b"])  # noqa: E731
    same = paired_bootstrap(score(good), score(good), 400, "accuracy", resamples=200)
    assert same["difference"] == 0 and same["p_value"] == 1.0
    better = paired_bootstrap(score(good), score(bad), 400, "accuracy", resamples=200)
    assert better["difference"] > 0.2 and better["p_value"] < 0.01


@pytest.mark.slow
def test_tune_page_shows_history_parameters_and_importances_offline(tiny_bert, tmp_path):
    pytest.importorskip("optuna")
    from playwright.sync_api import sync_playwright

    import bertfit
    from tests.conftest import marker_rows, write_rows

    config = bertfit.TuneConfig(
        train=str(write_rows(tmp_path / "train.jsonl", marker_rows(48, 0))),
        dev=str(write_rows(tmp_path / "dev.jsonl", marker_rows(16, 1))),
        model=str(tiny_bert), output=str(tmp_path / "study"), epochs=1, n_trials=4,
        space="lr=1e-4:3e-2:log,weight_decay=0:0.1", progress=False,
    )  # fmt: skip
    bertfit.tune(config)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page()
        errors: list[str] = []
        requests: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: requests.append(r.url))
        page.goto((tmp_path / "study" / "tune.html").resolve().as_uri())
        captions = page.locator("figcaption").all_inner_texts()
        loaded = images_loaded(page)
        rows = page.locator("table tr").count()
        shot = page.screenshot(full_page=True)
        browser.close()
    assert errors == [] and len(loaded) == 3 and all(loaded)
    assert [u for u in requests if not u.startswith(("file:", "data:"))] == []  # nothing fetched
    assert any("best so far" in c for c in captions) and any("matters" in c for c in captions)
    assert rows == 5  # header + 4 trials
    assert not_blank(shot)
