"""``train()``: resolve the config, read the data, pack it, build the model, fit, finish.

Every objective goes through the same steps; ``objectives.py`` says how each one is built and
fed, ``fit.py`` is the loop, ``finish.py`` scores the best model and writes the results. A
finished run then drops its resumable checkpoints (unless ``--keep-checkpoints``): what is left is
the model and its reports, about the model's size.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from bertfit import __version__
from bertfit.config.fields import DEFAULT_MODEL
from bertfit.config.train import TrainConfig
from bertfit.data.packing import check_max_length
from bertfit.data.tasks import get_task
from bertfit.errors import ConfigError
from bertfit.files import write_json
from bertfit.models.classifier import load_tokenizer
from bertfit.models.dropout import use_fast_dropout
from bertfit.models.encoders import Encoder, resolve_encoder
from bertfit.models.pooling import read_pooling
from bertfit.rundir import RESULTS, RUN_CONFIG, RunMeta
from bertfit.runtime import (
    available_cores,
    cpu_threads,
    deterministic_algorithms,
    pick_device,
    pick_precision,
    release_free_heap,
)
from bertfit.training.checkpoint import drop_checkpoints, last_checkpoint
from bertfit.training.distributed import (
    World,
    barrier,
    check_global_batch,
    node_first,
    pick_backend,
    process_device,
    process_group,
    rank_seed,
    threads_per_process,
)
from bertfit.training.failures import one_line_errors
from bertfit.training.finish import (
    finish_bi_encoder,
    finish_classifier,
    load_finished,
    loop_results,
    precision_name,
)
from bertfit.training.fit import run_loop
from bertfit.training.hooks import RunHooks
from bertfit.training.inputs import Source, TrainingData, label_names_of, read_training_data
from bertfit.training.objectives import Objective, bi_encoder_objective, classifier_objective
from bertfit.training.record import tensorboard_writer_class
from bertfit.training.resume import FINISHED, check_same_data, resolve_resume

log = logging.getLogger("bertfit")


def train(
    config: TrainConfig, train: Source = None, dev: Source = None, hooks: RunHooks | None = None
) -> Any:
    """Fine-tune ``config.model`` and return the finished run: a ``Run`` (with ``--objective``,
    the trained bi-encoder as an ``Embedder``).

    The data comes from ``config.train``/``config.dev`` (files), from ``config.task``, or as rows
    in memory: ``train``/``dev`` take a list of dicts, a pandas DataFrame or a Hugging Face
    ``Dataset`` with the config's column names.

    Example: ``bertfit.train(TrainConfig(train="train.tsv", output="runs/x", text_column="sentence"))``
    or ``bertfit.train(TrainConfig(output="runs/x"), train=[{"text": "fine", "label": "pos"}, ...])``.
    With ``resume="runs/x"`` (or ``"auto"``) a run continues from its last complete checkpoint.
    ``hooks`` (``training.hooks.RunHooks``) are for callers running many trainings: data read
    once, and a call after each dev evaluation that may stop the run.
    """
    world = World.from_env()
    # several processes (torchrun): the first reports, the others only warn
    with (
        logging_to_stderr(logging.INFO if world.is_main else logging.WARNING),
        one_line_errors(world),
    ):
        return _train(restarted(config), train, dev, hooks or RunHooks())


def restarted(config: TrainConfig) -> TrainConfig:
    """A worker torchrun restarted after a failure (--max-restarts) continues the run from its
    last checkpoint: the command it was started with said nothing about resuming."""
    restarts = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)
    if restarts < 1 or config.resume is not None:
        return config
    log.warning(f"restart {restarts} by torchrun: resuming from the last checkpoint")
    return dataclasses.replace(config, resume="auto", overwrite=False)


def _train(config: TrainConfig, train_rows: Source, dev_rows: Source, hooks: RunHooks) -> Any:
    in_memory = tuple(
        n for n, rows in (("train", train_rows), ("dev", dev_rows)) if rows is not None
    )
    config, checkpoint = resolve_resume(config)
    config.validate(in_memory)  # every problem the config shows, before anything heavy
    output = Path(config.output)
    if checkpoint is FINISHED:
        log.info(f"{output} is a finished run; nothing to resume")
        return load_finished(output)
    if config.tensorboard:
        tensorboard_writer_class()  # a missing package stops the run before anything is written
    world = World.from_env()
    check_global_batch(config.global_batch(), config.grad_accum, world.size)
    if checkpoint is None and world.is_main:
        check_output_dir(output, config.overwrite)
    threads = config.threads or (
        threads_per_process(world, available_cores()) if world.distributed else None
    )
    device = process_device(pick_device(config.device), world)
    with (
        cpu_threads(threads),
        deterministic_algorithms(config.deterministic),
        process_group(world, device, config.ddp_backend),
    ):
        dtype = pick_precision(config.precision, device)
        encoder = resolve_encoder(config.model)
        tokenizer = load_tokenizer(encoder)
        config = config.resolve(encoder, model_limit(config, encoder, tokenizer))
        check_max_length(tokenizer, config.max_length, config.pair_column is not None)
        with node_first(world):  # one download and one tokenising per node; the rest read them
            data = hooks.data or read_training_data(config, train_rows, dev_rows)
            build = bi_encoder_objective if config.objective else classifier_objective
            objective = build(config, encoder, tokenizer, data, device, dtype, world)
        if world.rank:  # the model is built alike everywhere; dropout differs from rank 0's
            torch.manual_seed(rank_seed(config.seed, world.rank))
        check_same_data(checkpoint, objective.fingerprint)
        if checkpoint is not None:
            objective.load_checkpoint(checkpoint.path)
        elif world.is_main:
            start_run_dir(output, config, encoder, data, objective.meta)
        barrier(world)  # the other ranks write nothing, and start once the folder stands
        model = objective.trainee.model
        if device.type == "cpu":
            use_fast_dropout(model)
        model.to(device)
        log.info(
            f"{objective.summary}; encoder {encoder.name}; device {device}, "
            f"{precision_name(dtype)}, lr {config.lr:g}"
        )
        state = run_loop(
            objective.trainee, config, device, dtype, output, checkpoint, objective.fingerprint,
            world, hooks,
        )  # fmt: skip
        if not world.is_main:  # rank 0 scores the best model and writes the results
            barrier(world)
            return None
        del model
        release_weights(objective.trainee.model)  # the finishing step reloads the best from disk
        release_free_heap()
        finished = _finish(
            objective, state, config, data, tokenizer, output, device, dtype, encoder, world
        )
        drop_finished_checkpoints(output, config.keep_checkpoints)
        barrier(world)
        return finished


def _finish(
    objective: Objective, state, config, data, tokenizer, output, device, dtype, encoder, world
):
    summary = loop_results(state, config)
    summary["processes"] = world.size  # examples/s above is the whole job's
    summary["global_batch"] = config.batch_size
    summary["per_process_batch"] = config.batch_size // (world.size * config.grad_accum)
    if world.distributed:
        summary["ddp_backend"] = pick_backend(device.type, config.ddp_backend)
    if config.objective is not None:
        return finish_bi_encoder(summary, config, data, output, device)
    context = (output, device, dtype, encoder.kind)
    dev = objective.splits["dev"]
    return finish_classifier(summary, state.thresholds, config, data, dev, tokenizer, context)


def release_weights(model: torch.nn.Module) -> None:
    """Free the trained model's weights and gradients once training is over: scoring and the
    report then reuse their memory instead of raising the run's peak (about 90 MB for MiniLM)."""
    for tensor in [*model.parameters(), *model.buffers()]:
        tensor.grad = None
        tensor.data = torch.empty(0, dtype=tensor.dtype, device=tensor.device)


def drop_finished_checkpoints(output: Path, keep: bool) -> None:
    """After results.json: the resumable checkpoints are of no more use, unless kept on purpose."""
    if keep:
        return
    dropped = drop_checkpoints(output)
    if dropped:
        log.info(
            f"removed {', '.join(dropped)} (resumable training state a finished run does not "
            "need; --keep-checkpoints keeps it)"
        )


def model_limit(config: TrainConfig, encoder: Encoder, tokenizer) -> int | None:
    """The most tokens the model takes; for a bi-encoder also the length its
    sentence-transformers files declare, when they declare one."""
    positions = getattr(tokenizer, "max_positions", None)
    if config.objective is None or config.max_length is not None:
        return positions
    declared = read_pooling(encoder.path, max_length=positions or 10**9).max_length
    return min(declared, positions) if positions else declared


def check_output_dir(output: Path, overwrite: bool) -> None:
    """An --output that would be overwritten without --overwrite, or hides a run to resume, is refused."""
    if output.exists() and not output.is_dir():
        raise ConfigError(f"--output {output}: exists and is not a directory")
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        last = last_checkpoint(output)
        if last is not None and not (output / RESULTS).is_file():
            raise ConfigError(
                f"--output {output}: an unfinished run with {last.path.name}; continue it with "
                f"--resume auto (or bertfit train --resume {output}), or pass --overwrite to start again"
            )
        raise ConfigError(
            f"--output {output}: directory exists and is not empty; pass --overwrite to replace it"
        )


def start_run_dir(
    output: Path, config: TrainConfig, encoder: Encoder, data: TrainingData, extra: dict
) -> None:
    """Clear an overwritten run and write the resolved config; results.json comes only at the end."""
    if output.is_dir():
        shutil.rmtree(output)
    output.mkdir(parents=True)
    columns = {"text": config.text_column, "pair": config.pair_column, "label": config.label_column}
    if data.task:
        task = get_task(data.task)
        columns = {"text": task.text, "pair": task.pair, "label": task.label}
    meta = RunMeta(
        problem=data.problem,
        config=config.to_dict() | {"model": config.model or DEFAULT_MODEL},
        encoder={"kind": encoder.kind, "name": encoder.name, "path": str(encoder.path)},
        columns=columns,
        labels=data.labels,
        label_is_int=data.train.label_is_int,
        label_separator=config.label_separator,
        label_names=label_names_of(config),
        task=data.task,
        version=__version__,
    )
    write_json(output / RUN_CONFIG, meta.to_dict() | {"task": data.task} | extra)


@contextlib.contextmanager
def logging_to_stderr(level: int = logging.INFO) -> Iterator[None]:
    """Progress lines on stderr for the length of one call, when the application has set up no
    logging itself; the logger is left as it was afterwards."""
    if log.handlers or logging.getLogger().handlers:
        yield
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    before = log.level, log.propagate
    log.addHandler(handler)
    log.setLevel(level)
    log.propagate = False
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(before[0])
        log.propagate = before[1]
