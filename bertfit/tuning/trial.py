"""One trial of a study: a normal ``train`` run in OUTPUT/trials/N with the trial's options, its dev
evaluations reported to the pruner, and afterwards the folder kept as OUTPUT/best, stripped to
its metrics, or removed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from bertfit.config.train import TrainConfig
from bertfit.errors import BertfitError, Interrupted, Stopped
from bertfit.files import write_json
from bertfit.rundir import RESULTS
from bertfit.training.hooks import Evaluation, RunHooks
from bertfit.training.inputs import TrainingData
from bertfit.tuning.space import Space, Value, suggest
from bertfit.tuning.study import (
    COUNTED,
    PRUNED_AT,
    SURPLUS,
    is_surplus,
    make_pruner,
    mark_running_here,
    open_storage,
    open_study,
)

BEST = "best"
TRIALS = "trials"
BEST_RECORD = "best.json"  # which trial OUTPUT/best is, and its score
# what a trial folder keeps without its model: what it measured
METRIC_FILES = ("results.json", "metrics.jsonl", "steps.jsonl", "bertfit.json")

log = logging.getLogger("bertfit.tune")


class TrialFailed(Exception):
    """A trial that stopped with one line of its own (diverged, out of memory): the study goes on."""


class Surplus(Exception):
    """A trial asked for after the budget was full; it is not run."""


@dataclass(frozen=True)
class Study:
    """What every trial of one study shares, in this process."""

    base: TrainConfig  # the train options every trial starts from
    space: Space
    output: Path
    n_trials: int
    data: TrainingData  # read once per study (and process)
    keep_trials: bool = False
    url: str = ""  # the study's storage
    pruner: tuple[str, int, int] = ("none", 1, 1)  # make_pruner's arguments


def trial_config(study: Study, params: dict[str, Value], number: int) -> TrainConfig:
    """The trial's train options: the base with ``params`` replaced.

    With --eval-steps, a trial of another batch size evaluates after the same number of training
    examples, so the pruner compares trials at the same point of training.
    """
    base = study.base
    chosen: dict[str, Any] = dict(params)
    if base.eval_steps and "batch_size" in params:
        examples = base.eval_steps * base.global_batch()
        chosen["eval_steps"] = max(1, round(examples / int(params["batch_size"])))
    return dataclasses.replace(
        base,
        **chosen,
        output=str(study.output / TRIALS / str(number)),
        overwrite=True,
        resume=None,
        save_total_limit=0,  # a killed trial is re-run, not resumed: no checkpoints to write
        progress=False,
    )


def run_trial(study: Study, trial: Any) -> float:
    """Optuna's objective: train with the trial's options and return its best dev score."""
    from bertfit.training.launch import train  # --nproc: the trial in N processes

    if is_surplus(trial.study, trial.number, study.n_trials):
        trial.set_user_attr(SURPLUS, True)
        raise Surplus
    mark_running_here(trial)
    params = suggest(study.space, trial)
    config = trial_config(study, params, trial.number)
    folder = Path(config.output)
    shown = ", ".join(f"{k} {_shown(v)}" for k, v in params.items())
    log.info(f"trial {trial.number}: {shown}")
    started = time.perf_counter()
    report = Reporter(study.url, trial.study.study_name, trial._trial_id, study.pruner, trial)
    try:
        with quiet_training():
            train(config, hooks=RunHooks(data=study.data, on_evaluation=report))
    except (Interrupted, KeyboardInterrupt) as err:  # Ctrl-C before the loop's own handler
        shutil.rmtree(folder, ignore_errors=True)
        trial.study.enqueue_trial(params, user_attrs={"rerun_of": trial.number})
        code = err.exit_code if isinstance(err, Interrupted) else 130
        raise Interrupted(f"trial {trial.number} interrupted", code) from None
    except BertfitError as err:
        _record_time(trial, started)
        shutil.rmtree(folder, ignore_errors=True)  # a pruned or failed trial frees its disk
        if isinstance(err, Stopped) or PRUNED_AT in _stored(trial).user_attrs:
            log.info(f"trial {trial.number}: pruned after {_elapsed(started)}")
            import optuna

            raise optuna.TrialPruned() from None
        trial.set_user_attr(COUNTED, True)
        trial.set_user_attr("error", str(err).splitlines()[0] if str(err) else type(err).__name__)
        log.warning(f"trial {trial.number}: failed: {trial.user_attrs['error']}")
        raise TrialFailed(str(err)) from None
    results = json.loads((folder / RESULTS).read_text(encoding="utf-8"))
    score = float(results["dev"][results["metric"]])
    _record_time(trial, started)
    trial.set_user_attr("best_step", results.get("best_step"))
    trial.set_user_attr("best_epoch", results.get("best_epoch"))
    if results.get("test"):
        trial.set_user_attr("test", _numbers(results["test"]))
    kept = keep_if_best(study, trial.number, score)
    mark = f" (the best so far: {study.output / BEST})" if kept else ""
    log.info(
        f"trial {trial.number}: {results['metric']} {score:.4f} at step "
        f"{results.get('best_step')} in {_elapsed(started)}{mark}"
    )
    return score


@dataclass
class Reporter:
    """A trial's dev evaluations to its study, and the pruner's answer (True: stop now).

    It pickles: the first process of a multi-process trial (--nproc) gets a copy and opens the
    study itself. A trial that has trained to its end is scored, never pruned.
    """

    url: str
    study_name: str
    trial_id: int
    pruner: tuple[str, int, int]  # make_pruner's arguments
    trial: Any = None  # the live trial, in the process that asked for it

    def __call__(self, seen: Evaluation) -> bool:
        trial = self.trial or self._open()
        trial.report(seen.score, seen.examples)
        if seen.last or not trial.should_prune():
            return False
        trial.set_user_attr(PRUNED_AT, seen.examples)
        return True

    def _open(self) -> Any:
        import optuna

        study = open_study(open_storage(self.url), self.study_name, None, make_pruner(*self.pruner))
        self.trial = optuna.trial.Trial(study, self.trial_id)
        return self.trial

    def __getstate__(self) -> dict:
        return {**self.__dict__, "trial": None}  # a live trial holds a database connection


def _stored(trial: Any) -> Any:
    """The trial as the storage has it now (another process may have written to it)."""
    return next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)


def keep_if_best(study: Study, number: int, score: float) -> bool:
    """Move the trial's run to OUTPUT/best when it beats the one there; the loser keeps only its
    metrics (or everything, with --keep-trials). Workers take turns through a lock file."""
    folder = study.output / TRIALS / str(number)
    with FileLock(study.output / ".best.lock"):
        record = study.output / BEST_RECORD
        best = json.loads(record.read_text(encoding="utf-8")) if record.is_file() else None
        if best is not None and score <= best["score"]:
            _set_aside(folder, study.keep_trials)
            return False
        target = study.output / BEST
        if target.is_dir():
            old = study.output / TRIALS / str(best["trial"]) if best else None
            if old is not None and not old.exists():
                target.rename(old)
                _set_aside(old, study.keep_trials)
            else:
                shutil.rmtree(target)
        folder.rename(target)
        write_json(record, {"trial": number, "score": score})
        return True


def _set_aside(folder: Path, keep: bool) -> None:
    """A trial that is not the best keeps its metrics, not its weights (unless --keep-trials)."""
    if keep or not folder.is_dir():
        return
    for path in folder.iterdir():
        if path.name in METRIC_FILES:
            continue
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


@contextlib.contextmanager
def quiet_training() -> Iterator[None]:
    """A trial's own progress lines (epochs, files written, what to run next) are left out: the
    study says one line per trial; warnings still show."""
    trainer, tuner = logging.getLogger("bertfit"), log
    before = trainer.level, tuner.level
    trainer.setLevel(logging.WARNING)
    tuner.setLevel(logging.INFO)
    try:
        yield
    finally:
        trainer.setLevel(before[0])
        tuner.setLevel(before[1])


def _record_time(trial: Any, started: float) -> None:
    trial.set_user_attr("seconds", round(time.perf_counter() - started, 2))


def _elapsed(started: float) -> str:
    return f"{time.perf_counter() - started:.1f} s"


def _numbers(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, int | float)}


def _shown(value: Value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
