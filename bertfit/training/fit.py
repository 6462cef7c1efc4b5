"""The training loop, the same for every objective: forward, loss, backward, clip, step,
schedule, record, evaluate, checkpoint.

``run_loop`` wraps it with its guards: signals stop it at a checkpoint (or, with
``--save-total-limit 0``, without one); a full disk and out-of-memory become one line of advice;
the last complete checkpoint stays valid in every case.
"""

from __future__ import annotations

import errno
import logging
import math
import signal
import time
from pathlib import Path

import torch

from bertfit.config.fields import show_progress
from bertfit.config.train import TrainConfig
from bertfit.data.packing import length_grouped_batches
from bertfit.errors import Interrupted, TrainingError
from bertfit.evaluation.metrics import headline
from bertfit.training.advice import (
    announce_stop,
    disk_full_message,
    interrupted,
    is_out_of_memory,
    non_finite_stop,
    out_of_memory_advice,
)
from bertfit.training.checkpoint import (
    Checkpoint,
    StopSignals,
    load_training_state,
    prune_checkpoints,
    restore_best_model,
    restore_rng,
    save_checkpoint,
)
from bertfit.training.distributed import (
    ONE_PROCESS,
    World,
    barrier,
    rank_slices,
    reduce_gradients,
    sum_across,
)
from bertfit.training.objectives import Trainee
from bertfit.training.optim import linear_schedule, make_optimizer, optimizer_step, total_steps
from bertfit.training.record import Clock, Recorder, epoch_bar, rewrite_history
from bertfit.training.state import TrainState

log = logging.getLogger("bertfit")


def run_loop(
    trainee: Trainee,
    config: TrainConfig,
    device: torch.device,
    dtype: torch.dtype | None,
    output: Path,
    checkpoint: Checkpoint | None,
    fingerprint: str,
    world: World = ONE_PROCESS,
) -> TrainState:
    """``fit`` with an optimizer, a schedule and its guards; returns the final state."""
    steps = total_steps(len(trainee.lengths), config)
    optimizer = make_optimizer(
        trainee.model, config.lr, config.weight_decay, device, config.layer_lr_decay
    )
    scheduler = linear_schedule(optimizer, round(config.warmup_ratio * steps), steps)
    if checkpoint is not None:
        log.info(f"resuming from {checkpoint.path} (step {checkpoint.step})")
    try:
        announce = announce_stop if config.save_total_limit else _announce_stop_unsaved
        with StopSignals(announce) as stop:
            return fit(
                trainee, config, optimizer, scheduler, device, dtype, output,
                resume=checkpoint, stop=stop, fingerprint=fingerprint, world=world,
            )  # fmt: skip
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise TrainingError(disk_full_message(output, err)) from None
        raise
    except RuntimeError as err:  # torch.OutOfMemoryError is a RuntimeError too
        if not is_out_of_memory(err):
            raise
        advice = out_of_memory_advice(
            device, config.batch_size, config.grad_accum, config.max_length, output
        )
        raise TrainingError(advice) from None


def fit(
    trainee: Trainee,
    config: TrainConfig,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    device: torch.device,
    dtype: torch.dtype | None,
    output: Path,
    resume: Checkpoint | None = None,
    stop: StopSignals | None = None,
    fingerprint: str | None = None,
    world: World = ONE_PROCESS,
) -> TrainState:
    """The training loop; the best model goes to ``output``.

    About 80 lines on purpose: every step of an optimizer step is visible here in order
    (forward, loss, backward, clip, step, schedule, record, evaluate, checkpoint); the
    bookkeeping around them is in ``_Loop``.

    A checkpoint is saved every ``config.save_steps`` optimizer steps, at each epoch end and
    when ``stop`` reports a signal; with ``resume`` the loop continues from one exactly:
    weights (loaded by the caller), optimizer, schedule, random generators, batch order and
    position, counters and history.
    """
    model = trainee.model
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    state, order = TrainState(data=fingerprint), []  # order: this epoch's batches
    if resume is not None:
        state, order = _resume_state(resume, optimizer, scheduler, scaler, output)
    steps = total_steps(len(trainee.lengths), config)
    resumed = state.step if resume else None
    recorder = Recorder(output, steps, config.tensorboard, resumed, writes=world.is_main)
    loop = _Loop(trainee, config, state, recorder, output, world)
    save = lambda: loop.checkpoint(optimizer, scheduler, scaler, order)  # noqa: E731
    model.train()
    if resume is not None:
        restore_rng(resume.path)  # last, so nothing above draws from the restored generators
    for epoch in range(state.epoch, config.epochs + 1):
        if state.batch == 0:
            order = epoch_order(trainee, config, epoch)
        bar = epoch_bar(
            epoch, config.epochs, len(trainee.lengths), state.seen,
            show_progress(config.progress) and world.is_main,
        )  # fmt: skip
        loop.clock = Clock(state.epoch_seconds)
        for i in range(state.batch, len(order)):
            loss, value, correct = loop.batch_loss(order[i])  # forward and loss (this rank's part)
            finite = math.isfinite(value)
            if finite and loss is not None:
                scaler.scale(loss / config.grad_accum).backward()
            elif not finite:
                loop.non_finite(epoch, i, f"the loss is {value}")
            boundary = (i + 1) % config.grad_accum == 0 or i + 1 == len(order)
            if boundary:
                reduce_gradients(model, world)  # the global batch's gradient on every rank
                if not optimizer_step(model, optimizer, scaler, config.max_grad_norm):  # clip, step
                    loop.non_finite(epoch, i, "a gradient is not finite")
                scheduler.step()
                state.step += 1
                recorder.step(
                    state, epoch, value, scheduler.get_last_lr()[-1], loop.clock.seconds()
                )
            state.count(len(order[i]), value if finite else None, correct)
            loop.accuracy = correct is not None
            state.batch = i + 1
            loop.show(bar, len(order[i]))
            if not boundary:
                continue
            if config.eval_steps and state.step % config.eval_steps == 0:
                loop.evaluate(epoch, state.train_stats(loop.accuracy), pause=True)
            if i + 1 < len(order):  # the epoch end saves its own checkpoint
                signalled = stop is not None and stop.requested
                if signalled or (config.save_steps and state.step % config.save_steps == 0):
                    path = save()
                    if signalled:
                        bar.close()
                        raise _interrupted(stop, state.step, path, output)
        bar.close()
        stopping = loop.end_epoch(epoch)
        path = save()
        if stop is not None and stop.requested and state.epoch <= config.epochs:
            raise _interrupted(stop, state.step, path, output)
        if stopping:
            log.info(f"early stopping: no dev improvement in {state.bad_evals} evaluations")
            break
    recorder.close()
    return state


def epoch_order(trainee: Trainee, config: TrainConfig, epoch: int) -> list[list[int]]:
    """This epoch's batches: length-grouped, shuffled by seed and epoch."""
    batches = length_grouped_batches(
        trainee.lengths, config.batch_size, config.seed + epoch, config.length_groups
    )
    return [[int(i) for i in batch] for batch in batches]


def _interrupted(stop: StopSignals, step: int, path: Path | None, output: Path) -> Interrupted:
    """The error a signal stops the run with: the checkpoint saved and how to resume, or, with
    --save-total-limit 0, that there is nothing to resume from."""
    if path is not None:
        return interrupted(stop, step, path, output)
    name = signal.Signals(stop.requested).name
    return Interrupted(
        f"{name} at step {step}: stopped without a checkpoint (--save-total-limit 0 saves none), "
        "so the run cannot be resumed; run the same command with --overwrite to train it again",
        stop.exit_code,
    )


def _announce_stop_unsaved(number: int) -> None:
    log.warning(
        f"{signal.Signals(number).name}: stopping after this step; --save-total-limit 0 saves "
        "no checkpoint, so the run cannot be resumed (press Ctrl-C again to quit at once)"
    )


def _resume_state(resume: Checkpoint, optimizer, scheduler, scaler, output: Path):
    order = load_training_state(resume.path, optimizer, scheduler, scaler)
    state = TrainState.from_dict(resume.state)
    rewrite_history(output, state)
    restore_best_model(resume.path, output)
    return state, order


class _Loop:
    """The loop's bookkeeping, so ``fit`` reads as its steps: evaluation and keeping the best
    model, the end of an epoch, checkpoints, non-finite batches and the progress bar."""

    def __init__(
        self,
        trainee: Trainee,
        config,
        state: TrainState,
        recorder,
        output,
        world: World = ONE_PROCESS,
    ):
        self.trainee, self.config, self.state = trainee, config, state
        self.recorder, self.output, self.world = recorder, output, world
        self.clock = Clock()
        self.accuracy = False  # whether batch_loss counts right predictions (classifiers)

    def batch_loss(self, batch: list[int]) -> tuple[torch.Tensor | None, float, int | None]:
        """(this rank's loss to back-propagate, the global batch's mean loss, right predictions
        in it). With several ranks each computes its slice's mean loss, weighted by the slice's
        share of the batch, so the summed gradients are those of the whole batch."""
        if not self.world.distributed:
            loss, correct = self.trainee.batch_loss(batch)
            return loss, float(loss.item()), correct  # .item() syncs; once per batch is cheap
        mine = rank_slices(batch, self.trainee.lengths, self.world.size)[self.world.rank]
        loss, correct = self.trainee.batch_loss(mine) if mine else (None, None)
        share = len(mine) / len(batch)
        local = float(loss.item()) * share if loss is not None else 0.0
        total, right = sum_across(self.world, [local, float(correct or 0)])
        weighted = loss * share if loss is not None else None
        return weighted, total, (int(right) if correct is not None or not mine else None)

    def evaluate(self, epoch: int, stats: dict, pause: bool = False) -> None:
        started = time.perf_counter()
        dev, thresholds = self.trainee.evaluate()
        record = {"epoch": epoch, "step": self.state.step, **stats, "dev": headline(dev)}
        record["time"] = round(time.time(), 3)
        self.recorder.evaluation(self.state, record, stats)
        if self.state.keep_if_best(epoch, dev[self.config.metric], dev, thresholds):
            if self.world.is_main:
                self.trainee.write_model(self.output)
            barrier(self.world)
        self.trainee.model.train()
        if pause:  # evaluation time is not training time
            self.clock.pause_for(time.perf_counter() - started)

    def end_epoch(self, epoch: int) -> bool:
        """Evaluate, log the epoch line and move to the next epoch; True to stop early."""
        state, config = self.state, self.config
        self.recorder.flush(state)
        elapsed = self.clock.seconds()
        state.train_seconds += elapsed
        state.train_seen += state.seen
        stats = state.train_stats(self.accuracy)
        stats["examples_per_second"] = state.seen / elapsed if elapsed else 0.0
        self.evaluate(epoch, stats)
        accuracy = f"train acc {stats['train_accuracy']:.4f}, " if self.accuracy else ""
        log.info(
            f"epoch {epoch}/{config.epochs}: loss {stats['train_loss']:.4f}, {accuracy}"
            f"dev {config.metric} {state.last_dev:.4f}, "
            f"{stats['examples_per_second']:.1f} examples/s"
        )
        patience = config.early_stopping_patience
        stopping = patience is not None and state.bad_evals >= patience
        state.next_epoch(config.epochs + 1 if stopping else epoch + 1)
        self.clock = Clock()
        return stopping

    def checkpoint(self, optimizer, scheduler, scaler, order) -> Path | None:
        """Save a resumable checkpoint and prune older ones; None with --save-total-limit 0."""
        state = self.state
        state.epoch_seconds = self.clock.seconds()
        self.recorder.flush(state)
        if self.config.save_total_limit == 0 or not self.world.is_main:
            barrier(self.world)
            return None
        state.dev_score = state.last_dev if state.evaluated_step == state.step else None
        path = save_checkpoint(
            self.output,
            state.step,
            self.trainee.write_model,
            optimizer,
            scheduler,
            scaler,
            state.to_dict(),
            order,
        )
        prune_checkpoints(self.output, self.config.save_total_limit)
        barrier(self.world)
        return path

    def non_finite(self, epoch: int, batch: int, what: str) -> None:
        """Skip the batch with a warning (--skip-nonfinite) or stop, keeping the last checkpoint."""
        where = f"step {self.state.step + 1} (epoch {epoch}, batch {batch + 1})"
        if not self.config.skip_nonfinite:
            raise non_finite_stop(where, what, self.output)
        self.state.skipped_batches += 1
        log.warning(f"{where}: {what}; batch skipped (--skip-nonfinite)")

    def show(self, bar, examples: int) -> None:
        bar.update(examples)
        seen = max(self.state.seen, 1)
        bar.set_postfix(
            loss=f"{self.state.loss_sum / seen:.4f}",
            ex_s=f"{seen / self.clock.seconds():.0f}",
            refresh=False,
        )
