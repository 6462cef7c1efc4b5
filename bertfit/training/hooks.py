"""What a caller that runs many trainings in one process hands each one (``bertfit tune``): the
data, read once, and a call after every dev evaluation that may stop the run.

Hooks live for one ``train`` call; nothing here is process-wide state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bertfit.training.inputs import TrainingData


@dataclass(frozen=True)
class Evaluation:
    """One dev evaluation, as the loop has just recorded it."""

    epoch: int
    step: int  # optimizer steps so far
    examples: int  # training examples seen so far, over all epochs: comparable across batch sizes
    score: float  # the dev metric (--metric)
    best: float  # the best score so far, this one included
    last: bool  # the run's final evaluation: training is over


@dataclass(frozen=True)
class RunHooks:
    """``data`` replaces reading the config's files; ``on_evaluation`` returns True to stop the
    run at once (the run then raises ``bertfit.errors.Stopped``). With ``--nproc`` both go to
    every process, so they must pickle; only the first process calls ``on_evaluation``."""

    data: TrainingData | None = None
    on_evaluation: Callable[[Evaluation], bool] | None = None
