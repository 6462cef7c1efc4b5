"""Where a run stands: counters, the best model so far and the history, as a checkpoint stores them."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class TrainState:
    """Everything besides tensors that a resumed run needs to continue exactly.

    Saved as ``trainer_state.json`` in every checkpoint; ``thresholds`` are the multi-label
    decision thresholds tuned with the best model, ``last_thresholds`` those tuned at the latest
    evaluation, which go with the checkpoint's own weights (``predict --checkpoint`` reads them).
    """

    data: str | None = None  # digest of the packed data: a resumed run must see the same
    epoch: int = 1
    batch: int = 0  # the next batch of this epoch's order
    step: int = 0  # optimizer steps so far
    best: float | None = None
    best_epoch: int = 0
    best_step: int = 0
    bad_evals: int = 0  # evaluations in a row without improvement (early stopping)
    dev: dict = field(default_factory=dict)  # the best model's dev metrics
    thresholds: list[float] | None = None
    last_thresholds: list[float] | None = None  # tuned at the latest evaluation (this model)
    last_dev: float | None = None
    evaluated_step: int | None = None
    dev_score: float | None = None  # the score of the model saved in this checkpoint, if evaluated
    loss_sum: float = 0.0  # this epoch so far
    correct: int = 0
    seen: int = 0
    skipped_batches: int = 0
    epoch_seconds: float = 0.0
    train_seconds: float = 0.0  # all finished epochs
    train_seen: int = 0
    metrics: list[dict] = field(default_factory=list)  # metrics.jsonl so far
    steps: list[dict] = field(default_factory=list)  # steps.jsonl so far
    world_size: int = 1  # the processes that trained (a resume may use another number)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainState:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in names})

    def count(self, examples: int, loss: float | None, correct: int | None) -> None:
        """Add one batch to the epoch's running loss and accuracy (a skipped batch adds nothing)."""
        if loss is None:
            return
        self.loss_sum += loss * examples
        if correct is not None:
            self.correct += correct
        self.seen += examples

    def train_stats(self, accuracy: bool) -> dict[str, float]:
        seen = max(self.seen, 1)
        stats = {"train_loss": self.loss_sum / seen}
        if accuracy:
            stats["train_accuracy"] = self.correct / seen
        return stats

    def keep_if_best(self, epoch: int, score: float, dev: dict, thresholds) -> bool:
        """Record an evaluation; True when it is the best so far (the caller saves the model)."""
        self.last_dev, self.evaluated_step, self.last_thresholds = score, self.step, thresholds
        if not improves(score, self.best):
            self.bad_evals += 1
            return False
        self.best, self.best_epoch, self.best_step, self.bad_evals = score, epoch, self.step, 0
        self.dev, self.thresholds = dev, thresholds
        return True

    def next_epoch(self, epoch: int) -> None:
        """The epoch is done: a checkpoint saved now resumes at the next epoch's first batch."""
        self.epoch, self.batch = epoch, 0
        self.loss_sum, self.correct, self.seen, self.epoch_seconds = 0.0, 0, 0, 0.0


def improves(score: float, best: float | None) -> bool:
    """The first evaluation always counts (so a model is saved); NaN never beats a number."""
    if best is None or math.isnan(best):
        return True
    return not math.isnan(score) and score > best
