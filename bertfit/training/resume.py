"""Resuming a run: the config it keeps, the checkpoint it starts from, the same data it needs."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from bertfit.config.train import TrainConfig
from bertfit.errors import ConfigError
from bertfit.rundir import RESULTS, RUN_CONFIG
from bertfit.training.checkpoint import (
    Checkpoint,
    last_checkpoint,
    remove_stale_temporaries,
)


def check_same_data(checkpoint: Checkpoint | None, fingerprint: str) -> None:
    if checkpoint is not None and checkpoint.state.get("data") != fingerprint:
        raise ConfigError(
            f"{checkpoint.path}: the training or dev data changed since this checkpoint was "
            "saved; a resumed run needs the same data (start a new run with another --output)"
        )


log = logging.getLogger("bertfit")
FINISHED = object()  # resolve_resume's answer for a run that has nothing left to do


# options that may differ when a run resumes: where things are and how they are shown, not what
# is trained
RESUMABLE_CHANGES = {
    "output",
    "resume",
    "overwrite",
    "progress",
    "threads",
    "nproc",
    "max_restarts",
    "ddp_backend",
    "device",
    "cache_dir",
    "data_dir",
    "download",
    "save_steps",
    "save_total_limit",
    "keep_checkpoints",
    "tensorboard",
    "skip_nonfinite",
}


def resolve_resume(config: TrainConfig):
    """The config to run and the checkpoint to start from (None: a fresh run; FINISHED).

    ``--resume RUN`` takes the run's own settings, so ``bertfit train --resume runs/x`` is enough;
    options given as well must agree with them, except the ones in ``RESUMABLE_CHANGES``.
    """
    if config.resume is None:
        return config, None
    if config.overwrite:
        raise ConfigError("--resume continues a run and --overwrite replaces it; give one")
    auto = config.resume == "auto"
    if auto and config.output is None:
        raise ConfigError("--resume auto resumes --output; give --output DIR")
    run_dir = Path(config.output if auto else config.resume)
    if (
        not auto
        and config.output is not None
        and Path(config.output).resolve() != run_dir.resolve()
    ):
        raise ConfigError(f"--resume continues {run_dir} in place; drop --output {config.output}")
    if auto and (not run_dir.is_dir() or not any(run_dir.iterdir())):
        return dataclasses.replace(config, resume=None), None
    meta_path = run_dir / RUN_CONFIG
    if not meta_path.is_file():
        where = "--output" if auto else "--resume"
        raise ConfigError(f"{where} {run_dir}: not a bertfit run directory (no {RUN_CONFIG})")
    try:
        saved = json.loads(meta_path.read_text(encoding="utf-8"))["config"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"{meta_path}: cannot be read ({err})") from None
    merged = _merge_saved_config(config, saved, meta_path)
    merged = dataclasses.replace(merged, output=str(run_dir))
    if (run_dir / RESULTS).is_file():
        return merged, FINISHED
    checkpoint = last_checkpoint(run_dir)
    remove_stale_temporaries(run_dir)
    if checkpoint is None:
        _start_again(run_dir, auto, saved_none=saved.get("save_total_limit") == 0)
        return dataclasses.replace(merged, resume=None, overwrite=True), None
    return merged, checkpoint


def _start_again(run_dir: Path, auto: bool, saved_none: bool) -> None:
    """No checkpoint to resume from: the run starts again, except that ``--resume RUN`` of a run
    trained to save none (--save-total-limit 0) says so rather than quietly starting over."""
    if not saved_none:
        log.info(f"{run_dir} has no complete checkpoint yet; starting the run again")
        return
    why = f"{run_dir} was trained with --save-total-limit 0, so it has no checkpoint to resume from"
    if not auto:
        raise ConfigError(
            f"--resume {run_dir}: {why}; run its training command again with --overwrite "
            "(or with --resume auto)"
        )
    log.info(f"{why}; starting the run again")


def _merge_saved_config(config: TrainConfig, saved: dict, source: Path) -> TrainConfig:
    values, conflicts = {}, []
    for field in dataclasses.fields(TrainConfig):
        given, default = getattr(config, field.name), field.default
        stored = saved.get(field.name, default)
        if field.name in RESUMABLE_CHANGES:
            values[field.name] = given if given != default else stored
            continue
        values[field.name] = stored
        if given != default and given != stored:
            flag = "--" + field.name.replace("_", "-")
            conflicts.append(f"{flag} {given} (the run has {stored})")
    if conflicts:
        raise ConfigError(
            f"{source}: a resumed run keeps its settings, but the command changes "
            f"{'; '.join(conflicts)}; drop those options or start a new run with another --output"
        )
    # how the run was started, not a setting: a run first trained with --overwrite still resumes
    values["resume"], values["overwrite"] = config.resume, config.overwrite
    return TrainConfig(**values)
