"""The run-directory contract: every file a run holds, and what ``bertfit.json`` says about it.

A run directory is self-describing: ``predict``, ``evaluate``, ``explain``, ``embed`` and the
report read everything they need from it. This module is the only place that spells a run
file's name; everything else imports the name from here.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bertfit.data.examples import Columns

RUN_CONFIG = "bertfit.json"  # the resolved config, encoder, columns and labels (RunMeta)
RESULTS = "results.json"  # written last: its presence marks a finished run
METRICS = "metrics.jsonl"  # one line per evaluation
STEPS = "steps.jsonl"  # loss and learning rate every few optimizer steps, for the report
DEV_PREDICTIONS = "dev_predictions.jsonl"  # one line per dev example, for the report
REPORT = "report.html"
CARD = "README.md"  # the Hugging Face model card
TENSORBOARD = "tensorboard"
PLOTS = {
    "loss": "loss.png",
    "learning_rate": "learning_rate.png",
    "throughput": "throughput.png",
    "metrics": "metrics.png",
    "confusion": "confusion.png",
    "calibration": "calibration.png",
}
CHECKPOINT_PREFIX = "checkpoint-"  # checkpoint-<optimizer step>/
TRAINER_STATE = "trainer_state.json"  # inside a checkpoint: counters, best so far, history
BEST_MODEL = "best_model"  # inside a checkpoint: the run's best model as it was then
NLI_HEAD = "nli_head.safetensors"  # the softmax objective's head, kept in checkpoints only
EMBEDDING = "embedding"  # the problem of a bi-encoder (sentence-embedding) run


@dataclass(frozen=True)
class RunMeta:
    """What ``bertfit.json`` records about a run: how to rebuild its inputs and read its outputs."""

    problem: str
    config: dict[str, Any] = field(default_factory=dict)
    encoder: dict[str, str] = field(default_factory=dict)  # kind (hf or d2l), name, path
    columns: dict[str, str | None] = field(default_factory=dict)  # text, pair, label as trained
    labels: list[str] = field(default_factory=list)
    label_is_int: bool = False
    label_separator: str = "|"
    label_names: dict[str, str] | None = None  # code in the data -> the name the run uses
    task: str | None = None
    objective: str | None = None  # bi-encoder runs: cosine, contrastive or softmax
    pooling: dict[str, Any] | None = None  # bi-encoder runs: mode, normalize, max_length
    score_range: list[float] | None = None  # cosine objective: the gold scores' range
    version: str | None = None

    @property
    def is_embedding(self) -> bool:
        return self.problem == EMBEDDING

    @property
    def is_pair(self) -> bool:
        return self.columns.get("pair") is not None

    @property
    def encoder_kind(self) -> str:
        return self.encoder["kind"]

    @property
    def base_model(self) -> str:
        return self.encoder["name"]

    @property
    def max_length(self) -> int:
        return self.config["max_length"]

    @property
    def truncation(self) -> str:
        return self.config.get("truncation", "longest-first")

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RunMeta:
        known = {k: raw[k] for k in cls.__dataclass_fields__ if k in raw}
        return cls(**known)


def read_meta(run_dir: str | os.PathLike) -> RunMeta:
    """The run's ``RunMeta``; OSError or ValueError when the file is missing or damaged."""
    raw = json.loads((Path(run_dir) / RUN_CONFIG).read_text(encoding="utf-8"))
    if not isinstance(raw, dict) or "problem" not in raw:
        raise ValueError(f"{RUN_CONFIG} holds no run description")
    return RunMeta.from_dict(raw)


def read_results(run_dir: str | os.PathLike) -> dict[str, Any]:
    """``results.json`` of a finished run; OSError or ValueError when missing or damaged."""
    return json.loads((Path(run_dir) / RESULTS).read_text(encoding="utf-8"))


def is_run_dir(path: str | os.PathLike) -> bool:
    return (Path(path) / RUN_CONFIG).is_file()


def is_finished(run_dir: str | os.PathLike) -> bool:
    return (Path(run_dir) / RESULTS).is_file()


def is_embedding_run(path: str | os.PathLike) -> bool:
    """True for a bi-encoder run directory; False for anything else (a classifier run, an
    encoder folder, a hub name, a damaged file)."""
    try:
        return read_meta(path).is_embedding
    except (OSError, ValueError, TypeError):
        return False


def thresholds_of(results: dict[str, Any], labels: list[str]) -> list[float]:
    """Multi-label decision thresholds in label order: tuned ones where recorded, else 0.5."""
    chosen = results.get("thresholds") or {}
    return [float(chosen.get(label, 0.5)) for label in labels]


def trained_columns(
    meta: RunMeta, text: str | None = None, pair: str | None = None, label: str | None = None
) -> Columns:
    """The columns given, else those the run was trained with."""
    trained = meta.columns
    return Columns(text or trained["text"], pair or trained["pair"], label or trained["label"])
