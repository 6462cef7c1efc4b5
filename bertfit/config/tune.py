"""``TuneConfig``: every ``bertfit train`` option, plus what a hyper-parameter search needs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from bertfit.config.fields import option, raise_if
from bertfit.config.train import TrainConfig

DEFAULT_TRIALS = 20

SPACE_HELP = (
    "what the trials vary: a spec (lr=1e-5:3e-4:log,epochs=1:4,batch_size=16|32), a YAML or JSON "
    "file of option: range entries, or bert-paper (the BERT paper's grid: batch_size 16|32 x lr "
    "5e-5|3e-5|2e-5 x epochs 2|3|4) [default: lr a factor of 5 either side of the encoder's "
    "default (log scale), epochs 1:4, batch_size 16|32|64, warmup_ratio 0:0.2, weight_decay "
    "0:0.1, layer_lr_decay 0.7:1.0 (classifiers), dropout 0:0.2, seed 0:10000; an option set "
    "away from its default, such as --epochs 1, stays as given]"
)


@dataclass
class TuneConfig(TrainConfig):
    """Search train's hyper-parameters with Optuna: each trial is a train run; the best is kept as OUTPUT/best."""

    n_trials: int | None = option(
        None,
        f"trials in the study in total, over reruns and workers [default: {DEFAULT_TRIALS}; a "
        "grid: its size]",
    )
    timeout: float | None = option(
        None, "start no new trial after S seconds (a running trial finishes)"
    )
    space: str | None = option(None, SPACE_HELP)
    sampler: Literal["tpe", "random", "grid"] | None = option(
        None, "how trials are chosen [default: grid for a space of lists only, else tpe]"
    )
    pruner: Literal["hyperband", "median", "none"] = option(
        "hyperband",
        "stop unpromising trials at a dev evaluation (--eval-steps gives several per epoch)",
    )
    storage: str | None = option(
        None,
        "Optuna storage URL that workers on many machines share (sqlite:///PATH, "
        "postgresql://user:password@host/db) [default: sqlite:///OUTPUT/study.db]",
    )
    study_name: str | None = option(None, "name of the study in --storage [default: bertfit]")
    workers: int = option(
        1, "trials run in parallel on this machine, each on its share of the CPU cores"
    )
    keep_trials: bool = option(
        False, "keep every trial's model in OUTPUT/trials/N (by default only OUTPUT/best has one)"
    )

    def validate(self, in_memory: tuple[str, ...] = ()) -> TuneConfig:
        problems = []
        if self.output is None:
            problems.append("--output is required: the folder the study, trials and best run go to")
        if self.n_trials is not None and self.n_trials < 1:
            problems.append(f"--n-trials must be at least 1, got {self.n_trials}")
        if self.timeout is not None and self.timeout <= 0:
            problems.append(f"--timeout must be above 0 seconds, got {self.timeout:g}")
        if self.workers < 1:
            problems.append(f"--workers must be at least 1, got {self.workers}")
        if self.resume not in (None, "auto", self.output):
            problems.append(
                f"--resume {self.resume}: a study continues in its own --output; run the same "
                "command again (or with --resume auto)"
            )
        raise_if(problems)
        self.train_config().validate(in_memory)
        return self

    def train_config(self) -> TrainConfig:
        """The train options alone: what every trial starts from."""
        names = [f.name for f in dataclasses.fields(TrainConfig)]
        return TrainConfig(**{name: getattr(self, name) for name in names})
