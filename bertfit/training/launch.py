"""``bertfit train --nproc N``: the same training in N processes on this machine, started and
watched by torchrun's own elastic agent (``torch.distributed.launcher``), not a home-made one.

Each worker runs ``train`` with the torchrun environment (RANK, WORLD_SIZE, ...) the agent sets;
``training/distributed.py`` reads it. An error is said in one line by the worker that should say
it (``failures.py``); the agent stops the others, and the job's exit code is that worker's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

from bertfit.config.train import TrainConfig
from bertfit.errors import BertfitError, ConfigError, Stopped, TrainingError
from bertfit.training.distributed import World, check_global_batch
from bertfit.training.failures import PEER_FAILED, ReportedError
from bertfit.training.hooks import RunHooks


def train(config: TrainConfig, train_rows=None, dev_rows=None, hooks: RunHooks | None = None):
    """``bertfit.train`` with ``--nproc N``: the job in N processes started here; otherwise (one
    process, or already one of torchrun's workers) the training itself. ``hooks`` go to every
    process (they must pickle); the first process calls ``on_evaluation``."""
    from bertfit.training.run import train as train_here

    if not (config.nproc and config.nproc > 1) or World.from_env().distributed:
        return train_here(config, train_rows, dev_rows, hooks)
    if train_rows is not None or dev_rows is not None:
        raise ConfigError(
            "--nproc trains from files or a --task; rows in memory stay in one process"
        )
    config.validate(())  # a bad option is said once, before any process starts
    check_global_batch(config.global_batch(), config.grad_accum, config.nproc)
    launch(config, hooks)
    from bertfit.training.finish import load_finished

    return load_finished(Path(config.output))


def launch(config: TrainConfig, hooks: RunHooks | None = None) -> None:
    """Train ``config`` in ``config.nproc`` local processes; returns when all have finished.

    With ``--max-restarts K`` the agent restarts the workers after a failure (a killed process)
    up to K times; they resume from the run's last checkpoint by themselves.
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    setup = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=config.nproc,
        run_id=uuid.uuid4().hex,
        rdzv_backend="c10d",
        rdzv_endpoint="127.0.0.1:0",  # a free loopback port: one machine, nothing to reach
        max_restarts=config.max_restarts,
        monitor_interval=0.2,
        start_method="spawn",
    )
    try:
        with _quiet_agent(), _store_per_attempt():
            one = dataclasses.replace(config, nproc=None, max_restarts=0)
            elastic_launch(setup, _worker)(one, hooks)
    except ChildFailedError as err:
        raise _job_failure([f.exitcode for f in err.failures.values()], config) from None


def _job_failure(codes: list[int], config: TrainConfig) -> BertfitError:
    """The job's error from its workers' exit codes: nothing more to say when a worker has said
    it (a bertfit error, an internal error), else which signal killed one and how to go on."""
    said = sorted(c for c in set(codes) if c > 0 and c != PEER_FAILED)
    if said:
        return ReportedError(said[0])
    killed = sorted({-c for c in codes if c < 0})
    how = (
        f"by {', '.join(_signal_name(n) for n in killed)}"
        if killed
        else f"(exit code {', '.join(map(str, sorted(set(codes))))})"
    )
    return TrainingError(
        f"a training process was stopped {how}; continue from the last checkpoint with "
        f"bertfit train --resume {config.output} --nproc {config.nproc} "
        "(or --max-restarts N to have torchrun restart it by itself)"
    )


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


@contextlib.contextmanager
def _store_per_attempt() -> Iterator[None]:
    """Workers restarted after a failure get a new store instead of the agent's shared one:
    in the shared store the failed attempt's keys remain, and a restarted worker could read a
    dead peer's address from them before the new peer writes its own (gloo then fails with
    "connection refused"). The agent reads this variable while it runs; it is put back after."""
    name = "TORCH_DISABLE_SHARE_RDZV_TCP_STORE"
    before = os.environ.get(name)
    os.environ[name] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


@contextlib.contextmanager
def _quiet_agent() -> Iterator[None]:
    """The agent logs a failed worker with a traceback of its own; the worker has said what
    went wrong in one line already. Its loggers are put back afterwards."""
    names = ("torch.distributed.elastic", "torch.multiprocessing")
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _worker(config: TrainConfig, hooks: RunHooks | None = None) -> None:
    """One process of the job: train; an error is said in one line by the process that should
    say it (``failures.one_line_errors``) and becomes the exit code."""
    from bertfit.training.run import train as train_here

    try:
        train_here(config, hooks=hooks)
    except BertfitError as err:
        if str(err) and not isinstance(err, Stopped):  # the caller that stopped it knows why
            sys.stderr.write(f"bertfit: error: {err}\n")
        sys.exit(err.exit_code)
