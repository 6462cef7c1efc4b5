"""``bertfit train --nproc N``: the same training in N processes on this machine, started and
watched by torchrun's own elastic agent (``torch.distributed.launcher``), not a home-made one.

Each worker runs ``train`` with the torchrun environment (RANK, WORLD_SIZE, ...) the agent sets;
``training/distributed.py`` reads it. A bertfit error is said in one line by rank 0 (every rank
meets the same config and data errors), and the agent stops the other workers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

from bertfit.config.train import TrainConfig
from bertfit.errors import BertfitError, ConfigError, TrainingError


def train(config: TrainConfig, train_rows=None, dev_rows=None):
    """``bertfit.train`` with ``--nproc N``: the job in N processes started here; otherwise (one
    process, or already one of torchrun's workers) the training itself."""
    from bertfit.training.distributed import World
    from bertfit.training.run import train as train_here

    if not (config.nproc and config.nproc > 1) or World.from_env().distributed:
        return train_here(config, train_rows, dev_rows)
    if train_rows is not None or dev_rows is not None:
        raise ConfigError(
            "--nproc trains from files or a --task; rows in memory stay in one process"
        )
    config.validate(())  # a bad option is said once, before any process starts
    launch(config)
    from bertfit.training.finish import load_finished

    return load_finished(Path(config.output))


def launch(config: TrainConfig) -> None:
    """Train ``config`` in ``config.nproc`` local processes; returns when all have finished."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    setup = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=config.nproc,
        run_id=uuid.uuid4().hex,
        rdzv_backend="c10d",
        rdzv_endpoint="127.0.0.1:0",  # a free loopback port: one machine, nothing to reach
        max_restarts=0,
        monitor_interval=0.2,
        start_method="spawn",
    )
    try:
        with _quiet_agent():
            elastic_launch(setup, _worker)(dataclasses.replace(config, nproc=None))
    except ChildFailedError as err:
        codes = sorted({failure.exitcode for failure in err.failures.values()})
        if codes == [2]:  # a bertfit error, already said in one line by the worker
            raise ReportedError() from None
        raise TrainingError(
            f"a training process failed (exit code {', '.join(map(str, codes))}); "
            "the run can be resumed from its last checkpoint with --resume"
        ) from None


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


class ReportedError(BertfitError):
    """A worker's error, already written to stderr: the command only exits with its code."""

    exit_code = 2

    def __init__(self) -> None:
        super().__init__("")


def _worker(config: TrainConfig) -> None:
    """One process of the job: train, and turn a bertfit error into one line and exit code 2."""
    from bertfit.training.distributed import World
    from bertfit.training.run import train as train_here

    try:
        train_here(config)
    except BertfitError as err:
        if World.from_env().is_main:
            sys.stderr.write(f"bertfit: error: {err}\n")
        sys.exit(2)
