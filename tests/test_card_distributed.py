"""The model card says how a run was trained: processes, backend, global and per-process batch,
the whole job's examples/s; runs from before those were recorded still get a card."""

from __future__ import annotations

import json

import pytest

from bertfit.report.card import model_card, write_model_card

META = {
    "config": {
        "epochs": 2,
        "batch_size": 64,
        "grad_accum": 2,
        "lr": 3e-5,
        "max_length": 128,
        "truncation": "longest-first",
        "seed": 1,
        "train": "data/train.csv",
    },
    "problem": "single_label_classification",
    "encoder": {"name": "tiny-bert", "path": "/nonexistent/tiny-bert"},
    "labels": ["neg", "pos"],
    "columns": {"text": "text", "label": "label"},
}
RESULTS = {
    "version": "0.0.0",
    "dev": {"accuracy": 0.875},
    "dev_ci": {"accuracy": [0.8, 0.95]},
    "train_examples": 640,
    "dev_examples": 64,
    "precision": "fp32",
    "train_examples_per_second": 1234.56,
}


def test_a_two_process_run_card_shows_world_backend_batches_and_job_speed(tmp_path):
    run = tmp_path / "two"
    run.mkdir()
    (run / "bertfit.json").write_text(json.dumps(META))
    results = RESULTS | {
        "processes": 2,
        "ddp_backend": "gloo",
        "global_batch": 64,
        "per_process_batch": 16,
    }
    (run / "results.json").write_text(json.dumps(results))
    write_model_card(run)  # from results.json, as `bertfit report` and a finished run do
    text = (run / "README.md").read_text()
    hyper = text.split("## Hyper-parameters")[1].split("## Results")[0]
    for row in (
        "| batch_size | 64 |",
        "| grad_accum | 2 |",
        "| precision | fp32 |",
        "| processes | 2 (DDP over gloo) |",
        "| global batch | 64 examples per optimizer step |",
        "| per-process batch | 16 examples per forward pass |",
        "| training speed | 1,234.6 examples/s (whole job) |",
    ):
        assert row in hyper.splitlines(), hyper
    assert "\n\n## Results" in text  # the table still ends before the next heading


def test_one_process_says_so_without_a_backend():
    results = RESULTS | {"processes": 1, "global_batch": 64, "per_process_batch": 32}
    text = model_card(META, results, "one")
    assert "| processes | 1 |" in text and "DDP" not in text
    assert "| per-process batch | 32 examples per forward pass |" in text


@pytest.mark.parametrize(
    "extra",
    [
        {},  # a run from before processes and batches were recorded
        {"processes": None, "global_batch": "64", "per_process_batch": 2.5, "ddp_backend": 3},
        {"processes": True, "global_batch": float("nan"), "per_process_batch": float("inf")},
    ],
)
def test_older_or_malformed_results_leave_the_rows_out(extra):
    results = {k: v for k, v in RESULTS.items() if k != "train_examples_per_second"} | extra
    text = model_card(META, results, "old")
    for missing in ("| processes |", "| global batch |", "| per-process batch |", "examples/s"):
        assert missing not in text
    assert "| precision | fp32 |\n\n## Results" in text
    assert "| dev | accuracy | 0.8750 | 0.8000 to 0.9500 |" in text
