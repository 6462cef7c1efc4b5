"""``tune()``: check everything, read the data once, run the study's trials (in K worker processes
with ``--workers``), then write ``trials.csv`` and ``tune.html`` and say how to reproduce the best.

Running the same command again continues the study in OUTPUT (its ``--n-trials`` is the total);
another machine running it with the same ``--storage`` joins the study.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import shlex
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bertfit.config.fields import changed_fields, flag
from bertfit.config.train import TrainConfig
from bertfit.config.tune import DEFAULT_TRIALS, TuneConfig
from bertfit.errors import BertfitError, ConfigError, Interrupted
from bertfit.files import write_json
from bertfit.tuning.space import Space, load_space
from bertfit.tuning.study import (
    STUDY_NAME,
    SURPLUS,
    budget,
    fail_killed_trials,
    make_pruner,
    make_sampler,
    open_storage,
    open_study,
    pick_sampler,
    quiet_optuna,
    safe_url,
    storage_url,
    used,
)
from bertfit.tuning.trial import BEST, Study, Surplus, TrialFailed, run_trial, trial_config

SETTINGS = "tune.json"  # what the study searches: a rerun must search the same
# train options a rerun may change without changing what the study searches
RUNTIME = {"threads", "device", "progress", "overwrite", "resume", "cache_dir", "data_dir"}

log = logging.getLogger("bertfit.tune")


@dataclass(frozen=True)
class Plan:
    """Everything a worker process needs to run its share of the study."""

    study: Study
    url: str
    name: str
    sampler: str
    timeout: float | None
    metric: str


@dataclass(frozen=True)
class TuneResult:
    best_trial: int | None
    best_score: float | None
    best_params: dict[str, Any]
    best_dir: Path | None
    command: str | None
    states: dict[str, int]
    metric: str | None = None

    def summary_line(self) -> str:
        """The command's last line: the best trial, its parameters and how to reproduce it."""
        if self.best_trial is None:
            return "no trial finished: see trials.csv"
        shown = ", ".join(f"{k}={_value(v)}" for k, v in self.best_params.items())
        return (
            f"best trial {self.best_trial}: {self.metric} {self.best_score:.4f} with {shown}; "
            f"its run: {self.best_dir}; reproduce: {self.command}"
        )


def tune(config: TuneConfig) -> TuneResult:
    """Run (or continue) the study ``config`` describes; see ``bertfit tune --help``."""
    from bertfit.training.run import logging_to_stderr

    with logging_to_stderr(), quiet_optuna():
        plan = prepare(config)
        try:
            run_workers(plan, config.workers)
        except Interrupted as err:
            finish(plan)
            raise Interrupted(
                "interrupted: the trial that was running is queued to run again; run the same "
                "command to continue the study",
                err.exit_code,
            ) from None
        return finish(plan)


def prepare(config: TuneConfig) -> Plan:
    """Every check that can fail, before any trial runs: options, space, storage, data."""
    from bertfit.models.classifier import load_tokenizer
    from bertfit.models.encoders import resolve_encoder
    from bertfit.training.inputs import read_training_data
    from bertfit.training.run import model_limit

    config.validate()
    _check_installed()
    output = Path(config.output)
    base = _base(config)
    encoder = resolve_encoder(base.model)
    resolved = base.resolve(encoder, model_limit(base, encoder, load_tokenizer(encoder)))
    fixed = frozenset(changed_fields(config.train_config()))  # what the user chose to hold
    space = load_space(config.space, resolved, fixed)
    sampler = pick_sampler(config.sampler, space)
    n_trials = budget(config.n_trials, sampler, space, DEFAULT_TRIALS)
    settings = _settings(base, space, resolved.metric)
    _check_output(output, config, settings)
    url = storage_url(config.storage, output)
    name = config.study_name or STUDY_NAME
    if config.storage is not None:
        open_study(open_storage(url), name, None, None)  # a bad URL is one line, now
    data = read_training_data(base)  # once per study; every trial trains on these rows
    output.mkdir(parents=True, exist_ok=True)  # only once everything above has passed
    if config.storage is None:
        open_study(open_storage(url), name, None, None)  # creates OUTPUT/study.db
    write_json(output / SETTINGS, settings)
    rows = len(data.train)
    first = base.eval_steps * base.global_batch() if base.eval_steps else rows
    last = rows * int(_largest(space, "epochs", base.epochs))
    reports = (min(first, last), last)
    pruning = (config.pruner, *reports)
    study = Study(base, space, output, n_trials, data, config.keep_trials, url, pruning)
    log.info(
        f"study {name} in {safe_url(url)}: {n_trials} trials ({sampler} sampler, "
        f"{config.pruner} pruner), {resolved.metric} on dev, space {space.describe()}"
    )
    return Plan(study, url, name, sampler, config.timeout, resolved.metric)


def run_workers(plan: Plan, workers: int) -> None:
    """The trials, in this process or in ``workers`` processes side by side."""
    if workers == 1:
        work(plan)
        return
    import torch

    from bertfit.runtime import available_cores

    threads = plan.study.base.threads or max(1, available_cores() // workers)
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    plans = [
        dataclasses.replace(plan, study=dataclasses.replace(plan.study, base=base))
        for base in worker_bases(plan.study.base, workers, threads, gpus)
    ]
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_worker_process, args=(p,)) for p in plans]
    for process in processes:
        process.start()
    try:
        for process in processes:
            process.join()
    except KeyboardInterrupt:
        for process in processes:
            process.join()  # each worker stops its trial at the next step
        raise Interrupted("interrupted") from None
    failed = [p.exitcode for p in processes if p.exitcode not in (0, None)]
    if failed:
        raise ConfigError(f"{len(failed)} of {workers} workers failed (exit codes {failed})")


def worker_bases(base: TrainConfig, workers: int, threads: int, gpus: int) -> list[TrainConfig]:
    """Each worker's train options: its share of the CPU cores, and with GPUs and --device auto
    one GPU each (in turn, when there are more workers than GPUs)."""
    bases = []
    for index in range(workers):
        device = f"cuda:{index % gpus}" if gpus and base.device == "auto" else base.device
        bases.append(dataclasses.replace(base, threads=threads, device=device))
    return bases


def _worker_process(plan: Plan) -> None:
    """A --workers process: its errors as one line and an exit code, not a traceback."""
    try:
        work(plan)
    except BertfitError as err:
        logging.getLogger("bertfit").error(f"error: {err}")
        sys.exit(err.exit_code)


def work(plan: Plan) -> None:
    """One worker: trials until the study's budget is used (or --timeout passes)."""
    from bertfit.training.run import logging_to_stderr

    with logging_to_stderr(), quiet_optuna():
        storage = open_storage(plan.url)
        study = open_study(storage, plan.name, None, make_pruner(*plan.study.pruner))
        # another seed per process and per rerun: workers here and on other machines that shared
        # one seed would suggest the same trials
        seed = (plan.study.base.seed + 7919 * os.getpid() + len(study.trials)) % 2**32
        study.sampler = make_sampler(plan.sampler, plan.study.space, seed, plan.study.n_trials)
        deadline = time.monotonic() + plan.timeout if plan.timeout else None
        while True:
            for number in fail_killed_trials(study, storage):
                log.warning(f"trial {number} was killed while running: marked failed, re-run")
            done = used(study)
            if done >= plan.study.n_trials:
                break
            if deadline is not None and time.monotonic() >= deadline:
                log.info(f"--timeout: no new trial after {plan.timeout:g} s ({done} in the study)")
                break
            before = len(study.trials)
            study.optimize(
                lambda trial: run_trial(plan.study, trial),
                n_trials=1,
                catch=(TrialFailed, Surplus),
            )
            if any(t.user_attrs.get(SURPLUS) for t in study.trials[before:]):
                break  # another worker took the last slot


def finish(plan: Plan) -> TuneResult:
    """trials.csv, tune.html and the final line: the best trial and how to reproduce it."""
    from bertfit.tuning.report import write_reports

    study = open_study(open_storage(plan.url), plan.name, None, None)
    summary = write_reports(study, plan.study.output, plan.study.space, plan.metric)
    best = summary.get("best")
    if best is None:
        log.info(f"no trial has finished yet; see {plan.study.output / 'trials.csv'}")
        return TuneResult(None, None, {}, None, None, summary["states"], summary["metric"])
    config = trial_config(plan.study, best.params, best.number)
    command = reproduce_command(config, plan.study.output / "reproduced")
    best_dir = plan.study.output / BEST
    return TuneResult(
        best.number, best.value, dict(best.params), best_dir, command, summary["states"],
        summary["metric"],
    )  # fmt: skip


def reproduce_command(config: TrainConfig, output: Path) -> str:
    """``bertfit train`` with every option the trial set that is not the default."""
    skip = {"output", "overwrite", "resume", "save_total_limit", "progress"}
    if config.split_seed == config.seed:
        skip.add("split_seed")
    words = ["bertfit", "train"]
    for name in changed_fields(config):
        value = getattr(config, name)
        if name in skip:
            continue
        if isinstance(value, bool):
            words.append(flag(name) if value else "--no-" + flag(name)[2:])
        else:
            words += [flag(name), repr(value) if isinstance(value, float) else str(value)]
    words += ["--output", str(output)]
    return " ".join(shlex.quote(w) for w in words)


def _check_installed() -> None:
    import importlib.util

    if importlib.util.find_spec("optuna") is None:
        raise ConfigError("bertfit tune needs Optuna: pip install 'bertfit[tune]'")


def _base(config: TuneConfig) -> TrainConfig:
    """The train options every trial starts from; the dev split is pinned to the given seed, so a
    trial that changes --seed is judged on the same dev rows as every other."""
    base = config.train_config()
    split_seed = base.split_seed if base.split_seed is not None else base.seed
    return dataclasses.replace(base, resume=None, overwrite=True, split_seed=split_seed)


def _settings(base: TrainConfig, space: Space, metric: str) -> dict:
    options = {k: v for k, v in base.to_dict().items() if k not in RUNTIME | {"output"}}
    return {"space": space.describe(), "metric": metric, "train": options}


def _check_output(output: Path, config: TuneConfig, settings: dict) -> None:
    """A new study, a study to continue with the same settings, or a refusal in one line."""
    import json

    stored = output / SETTINGS
    if config.overwrite and output.exists():
        _delete_study(config, output)
        shutil.rmtree(output)
        return
    if stored.is_file():
        before = json.loads(stored.read_text(encoding="utf-8"))
        changed = _differences(before, settings)
        if changed:
            raise ConfigError(
                f"--output {output}: holds a study with other settings ({'; '.join(changed)}); "
                "run it with its own options, or pass --overwrite to start a new study there"
            )
        log.info(f"{output}: continuing the study there")
        return
    if config.resume not in (None, "auto"):
        raise ConfigError(
            f"--resume {config.resume}: no study to continue there ({SETTINGS} is missing)"
        )
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise ConfigError(
            f"--output {output}: exists and is not a study folder; pass --overwrite to replace it"
        )


def _differences(before: dict, now: dict) -> list[str]:
    changed = []
    if before.get("space") != now["space"]:
        changed.append(f"space {before.get('space')}")
    if before.get("metric") != now["metric"]:
        changed.append(f"metric {before.get('metric')}")
    old, new = before.get("train", {}), now["train"]
    for name in sorted(set(old) | set(new)):
        if old.get(name) != new.get(name):
            changed.append(f"{flag(name)} {old.get(name)}")
    return changed


def _delete_study(config: TuneConfig, output: Path) -> None:
    """--overwrite with a shared --storage: the study there goes too."""
    if config.storage is None:
        return
    import optuna

    try:
        optuna.delete_study(study_name=config.study_name or STUDY_NAME, storage=config.storage)
    except KeyError:
        pass  # no such study yet


def _largest(space: Space, name: str, default: float) -> float:
    for p in space.params:
        if p.name == name:
            return max(p.choices) if p.kind == "choice" else float(p.high)
    return default


def _value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
