"""What the labels say about the problem, before anything is trained.

A file whose labels are scores, or sets of labels, trains silently as a classifier with dozens
of classes unless someone looks; a label column that is really an id leaves no dev rows. These
checks look, and stop with a line that names the flag to add.
"""

from __future__ import annotations

from collections import Counter

from bertfit.data.examples import Examples
from bertfit.data.labels import is_float_text, is_int_text
from bertfit.errors import ConfigError

SCORE_DISTINCT = 10  # more distinct numbers than this, with fractions, look like scores
INTEGER_SCORE_DISTINCT = 20  # whole numbers with more distinct values look like a rating scale


def check_label_kind(train: Examples, separator: str, label_flag: str) -> None:
    """Stop when single-label classes look like scores, sets of labels, or row ids."""
    labels = [str(label) for label in train.labels]
    counts = Counter(labels)
    distinct = len(counts)
    examples = ", ".join(repr(label) for label in list(counts)[:3])
    scores = _all_numbers(labels) and not all(is_int_text(label) for label in labels)
    if distinct == len(labels) and distinct >= 3 and not scores:
        raise ConfigError(
            f"{train.path}: every row has a label of its own ({distinct:,} labels in "
            f"{len(labels):,} rows, e.g. {examples}); is {label_flag} the label column? "
            "(pass --as-classes to train them as classes anyway)"
        )
    if _all_numbers(labels) and _looks_like_scores(labels, distinct):
        raise ConfigError(
            f"{train.path}: the labels look like scores ({distinct:,} distinct numbers in "
            f"{len(labels):,} rows, e.g. {examples}); add --regression to predict a score, or "
            f"--as-classes to train {distinct:,} classes anyway"
        )
    sets = [label for label in counts if separator in label]
    if len(sets) >= 2:
        raise ConfigError(
            f"{train.path}: {len(sets):,} labels look like sets separated by {separator!r} "
            f"(e.g. {sets[0]!r}); add --multi-label to predict several labels per row, or "
            "--as-classes to train each combination as one class"
        )


def check_dev_split(train: Examples, dev_rows: int, fraction: float) -> None:
    """A held-out dev split with no rows means labels with a single row each: say which."""
    if dev_rows > 0:
        return
    counts = Counter(str(label) for label in train.labels or [""])
    single = [label for label, n in counts.items() if n == 1]
    why = (
        f"{len(single):,} of the {len(counts):,} labels have a single row (e.g. "
        + ", ".join(repr(label) for label in single[:3])
        + ")"
        if single and train.labels is not None
        else f"{len(train):,} rows are too few"
    )
    raise ConfigError(
        f"{train.path}: holding out --dev-fraction {fraction:g} of {len(train):,} rows "
        f"(stratified by label) leaves no dev rows: {why}; give --dev FILE, or more rows"
    )


def _all_numbers(labels: list[str]) -> bool:
    return all(is_float_text(label) for label in labels)


def _looks_like_scores(labels: list[str], distinct: int) -> bool:
    if all(is_int_text(label) for label in labels):
        return distinct > INTEGER_SCORE_DISTINCT
    return distinct > SCORE_DISTINCT
