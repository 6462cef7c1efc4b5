"""Labels: how a raw field becomes a label, the label set, targets for the loss, and the problem kinds."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from bertfit.data.examples import MISSING, Examples

if TYPE_CHECKING:
    import torch
from bertfit.errors import DataError


def as_label(value) -> str | None:
    if value is MISSING or value is None or isinstance(value, (list, dict)):
        return None
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text or None


LABEL_KINDS = ("single", "multi", "score")


def parse_label(value, kind: str, separator: str, path, line: int):
    """A label in the form the problem needs: a string, a list of strings, or a float score."""
    if kind == "multi":
        if isinstance(value, list):
            return [str(v).strip() for v in value if str(v).strip()]
        if value is MISSING or value is None or isinstance(value, dict):
            return None
        return [part.strip() for part in str(value).split(separator) if part.strip()]
    if isinstance(value, (list, dict)):
        raise DataError(
            f"{path}:{line}: the label is {json_type(value)}; expected "
            + (
                "a number"
                if kind == "score"
                else "a string or a number (several labels per row need --multi-label)"
            )
        )
    label = as_label(value)
    if kind == "score" and label is not None:
        try:
            score = float(label)
        except ValueError:
            raise DataError(
                f"{path}:{line}: label {label!r} is not a number; --regression needs numeric scores"
            ) from None
        if score != score or score in (float("inf"), float("-inf")):
            raise DataError(f"{path}:{line}: label {label!r} is not a finite number")
        return score
    return label


def check_label_type(path, line: int, raw, label: str, seen: dict, unit: str = "line") -> None:
    """Typed labels (JSON Lines, Parquet, rows in memory) must not mix numbers with names: ``1``
    beside ``"pos"`` is a data error (numbers beside numeric strings such as ``"1"`` are the same
    labels and pass). ``unit`` is what ``line`` counts: a line or a row."""
    if isinstance(raw, (bool, int, float)):
        kind = "number"
    elif is_int_text(label) or is_float_text(label):
        return
    else:
        kind = "name"
    seen.setdefault(kind, (line, raw))
    other = seen.get("name" if kind == "number" else "number")
    if other is not None:
        first_line, first = other
        raise DataError(
            f"{path}:{line}: label {json.dumps(raw, default=str)} is a {kind} but {unit} "
            f"{first_line} has the {'number' if kind == 'name' else 'name'} "
            f"{json.dumps(first, default=str)}; the labels must be all names or all numbers"
        )


def is_float_text(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def is_int_text(text: str) -> bool:
    return text.lstrip("-").isdigit()


def label_set(labels: list, as_int: bool) -> list[str]:
    """The sorted label names: numerically when all are integers, else as strings.

    Multi-label rows (lists) contribute each of their labels.
    """
    unique = {x for label in labels for x in (label if isinstance(label, list) else [label])}
    return sorted(unique, key=int) if as_int else sorted(unique)


def check_known_labels(examples: Examples, names: list[str]) -> None:
    """A dev/test label never seen in training is an error naming it and its first line."""
    known = set(names)
    for labels, line in zip(examples.labels or [], examples.lines):
        for label in labels if isinstance(labels, list) else [labels]:
            if label in known:
                continue
            raise DataError(
                f"{examples.path}:{line}: label {label!r} does not occur in the training data "
                f"(known labels: {', '.join(names)})"
            )


def label_targets(values: list, labels: list[str], kind: str) -> np.ndarray:
    """Label ids (int64), scores (float32, ``kind="score"``) or 0/1 rows over ``labels``
    (float32, ``kind="multi"``): what the loss and the metrics compare outputs with."""
    if kind == "score":
        return np.asarray(values, dtype=np.float32)
    index = {label: i for i, label in enumerate(labels)}
    if kind == "multi":
        rows = np.zeros((len(values), len(labels)), dtype=np.float32)
        for row, names in enumerate(values):
            rows[row, [index[name] for name in names]] = 1.0
        return rows
    return np.asarray([index[label] for label in values], dtype=np.int64)


def json_type(value) -> str:
    """The JSON name of a parsed value's type, for messages."""
    if isinstance(value, bool):
        return "true/false"
    return {dict: "an object", list: "an array", str: "a string", type(None): "null"}.get(
        type(value), "a number"
    )


SINGLE, REGRESSION, MULTI = (
    "single_label_classification",
    "regression",
    "multi_label_classification",
)


METRICS = {
    SINGLE: ("accuracy", "macro_f1", "f1", "mcc"),
    REGRESSION: ("spearman", "pearson"),
    MULTI: ("micro_f1", "macro_f1", "exact_match"),
}


PAIRS = "pairs"  # the contrastive objective: text/positive pairs without labels


@dataclass(frozen=True)
class Problem:
    """One kind of learning problem: how its labels are read, scored and learned.

    ``name`` is transformers' ``problem_type`` (so its pipelines treat a saved model right);
    ``label_kind`` is how a reader parses a label field (``single``, ``score`` or ``multi``);
    ``metrics`` lists what it can be judged by, the default first.
    """

    name: str
    label_kind: str
    metrics: tuple[str, ...]

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy, mean squared error or per-label binary cross-entropy."""
        import torch.nn.functional as F  # here: configs import this module, and need no torch

        if self.name == REGRESSION:
            return F.mse_loss(logits.squeeze(-1), targets)
        if self.name == MULTI:
            return F.binary_cross_entropy_with_logits(logits, targets)
        return F.cross_entropy(logits, targets)


PROBLEMS = {
    SINGLE: Problem(SINGLE, "single", METRICS[SINGLE]),
    REGRESSION: Problem(REGRESSION, "score", METRICS[REGRESSION]),
    MULTI: Problem(MULTI, "multi", METRICS[MULTI]),
    PAIRS: Problem(PAIRS, "multi", ("recall_at_1",)),
}


def problem(name: str) -> Problem:
    """The ``Problem`` of a run's or task's problem name (``single_label_classification``, ...)."""
    return PROBLEMS[name]


def parse_label_names(spec: str) -> dict[str, str]:
    """``"0=negative,1=positive"`` as ``{"0": "negative", "1": "positive"}``; ValueError with
    the reason when it is not of that form."""
    names: dict[str, str] = {}
    for part in spec.split(","):
        label, sep, name = (x.strip() for x in part.partition("="))
        if not sep or not label or not name:
            raise ValueError(f"expected LABEL=NAME pairs separated by commas, got {part.strip()!r}")
        if label in names:
            raise ValueError(f"label {label!r} is named twice")
        names[label] = name
    if len(set(names.values())) < len(names):
        raise ValueError("two labels have the same name")
    return names


def rename_labels(examples: Examples, names: dict[str, str]) -> Examples:
    """The examples with each label (or each label of a set) replaced by its name; labels that
    are already names pass through, so a file may hold either."""
    if examples.labels is None:
        return examples
    rename = lambda x: names.get(x, x)  # noqa: E731
    labels = [
        [rename(x) for x in label] if isinstance(label, list) else rename(label)
        for label in examples.labels
    ]
    return dataclasses.replace(examples, labels=labels, label_is_int=False)
