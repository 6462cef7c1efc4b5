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
from bertfit.errors import Interrupted, OutOfMemory, Stopped, TrainingError
from bertfit.evaluation.metrics import headline
from bertfit.runtime import release_free_heap
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
    rng_state,
    save_checkpoint,
)
from bertfit.training.distributed import (
    ONE_PROCESS,
    World,
    barrier,
    gather_objects,
    rank_seed,
    rank_slices,
    reduce_gradients,
    sum_across,
)
from bertfit.training.hooks import Evaluation, RunHooks
from bertfit.training.objectives import Trainee
from bertfit.training.optim import linear_schedule, make_optimizer, optimizer_step, total_steps
from bertfit.training.record import Clock, Recorder, epoch_bar, rewrite_history
from bertfit.training.state import TrainState

# steps between heap trims on the CPU: about 1 % of a MiniLM step's time for ~150 MB less peak
TRIM_EVERY = 8

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
    hooks: RunHooks | None = None,
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
                on_evaluation=hooks.on_evaluation if hooks else None,
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
        raise OutOfMemory(advice) from None


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
    on_evaluation=None,
) -> TrainState:
    """The training loop; the best model goes to ``output``.

    About 80 lines on purpose: every step of an optimizer step is visible here in order
    (forward, loss, backward, clip, step, schedule, record, evaluate, checkpoint); the
    bookkeeping around them is in ``_Loop``.

    A checkpoint is saved every ``config.save_steps`` optimizer steps, at each epoch end and
    when ``stop`` reports a signal; with ``resume`` the loop continues from one exactly:
    weights (loaded by the caller), optimizer, schedule, random generators, batch order and
    position, counters and history. ``on_evaluation`` (see ``hooks.RunHooks``) is called after
    every dev evaluation and may stop the run.
    """
    model = trainee.model
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    state, order = TrainState(data=fingerprint), []  # order: this epoch's batches
    if resume is not None:
        state, order = _resume_state(resume, optimizer, scheduler, scaler, output, world)
    steps = total_steps(len(trainee.lengths), config)
    resumed = state.step if resume else None
    recorder = Recorder(output, steps, config.tensorboard, resumed, writes=world.is_main)
    loop = _Loop(trainee, config, state, recorder, output, world, on_evaluation)
    save = lambda: loop.checkpoint(optimizer, scheduler, scaler, order)  # noqa: E731
    model.train()
    if resume is not None:
        # last, so nothing above draws from the restored generators
        restore_rng(resume.path, world.rank, rank_seed(config.seed, world.rank, state.step))
    for epoch in range(state.epoch, config.epochs + 1):
        if state.batch == 0:
            order = epoch_order(trainee, config, epoch)
        bar = epoch_bar(
            epoch, config.epochs, len(trainee.lengths), state.seen,
            show_progress(config.progress) and world.is_main,
        )  # fmt: skip
        loop.clock = Clock(state.epoch_seconds)
        for i in range(state.batch, len(order)):
            # forward, loss and backward of this rank's part, in --grad-accum passes
            value, correct, agreed = loop.forward_backward(order[i], scaler, _asked(stop))
            if math.isfinite(value):
                reduce_gradients(model, world)  # the global batch's gradient on every rank
                if not optimizer_step(model, optimizer, scaler, config.max_grad_norm):  # clip, step
                    loop.non_finite(epoch, i, "a gradient is not finite")
            else:  # every rank sees the same global loss, so all skip (or stop) together
                optimizer.zero_grad(set_to_none=True)
                loop.non_finite(epoch, i, f"the loss is {value}")
            scheduler.step()
            state.step += 1
            recorder.step(state, epoch, value, scheduler.get_last_lr()[-1], loop.clock.seconds())
            state.count(len(order[i]), value if math.isfinite(value) else None, correct)
            loop.accuracy = correct is not None
            state.batch = i + 1
            loop.show(bar, len(order[i]))
            if config.eval_steps and state.step % config.eval_steps == 0:
                loop.evaluate(epoch, state.train_stats(loop.accuracy), pause=True)
            if i + 1 < len(order):  # the epoch end saves its own checkpoint
                # several processes stop together: at the step after any of them was signalled
                signalled = agreed if world.distributed else _asked(stop)
                if signalled or (config.save_steps and state.step % config.save_steps == 0):
                    path = save()
                    if signalled:
                        bar.close()
                        raise _interrupted(stop, state.step, path, output)
        bar.close()
        stopping = loop.end_epoch(epoch)
        path = save()
        if loop.agree(_asked(stop)) and state.epoch <= config.epochs:
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


def _asked(stop: StopSignals | None) -> bool:
    """Whether a signal has asked this process to stop."""
    return stop is not None and stop.requested is not None


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


def _resume_state(resume: Checkpoint, optimizer, scheduler, scaler, output: Path, world: World):
    order = load_training_state(resume.path, optimizer, scheduler, scaler)
    state = TrainState.from_dict(resume.state)
    if world.is_main:  # the one writer puts the run's files back as they were at the checkpoint
        rewrite_history(output, state)
        restore_best_model(resume.path, output)
    barrier(world)
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
        on_evaluation=None,
    ):
        self.trainee, self.config, self.state = trainee, config, state
        self.recorder, self.output, self.world = recorder, output, world
        self.on_evaluation = on_evaluation
        self.clock = Clock()
        self.accuracy = False  # whether batch_loss counts right predictions (classifiers)
        self.on_cpu = next(trainee.model.parameters()).device.type == "cpu"

    def forward_backward(
        self, batch: list[int], scaler: torch.amp.GradScaler, signalled: bool
    ) -> tuple[float, int | None, bool]:
        """Back-propagate this rank's share of one global batch; return the batch's mean loss,
        its right predictions (classifiers, else None) and whether any rank was signalled to
        stop, all agreed over the ranks in one reduction.

        The batch is cut into one slice per rank and each slice into --grad-accum passes of
        similar padded tokens; each pass's mean loss is weighted by its share of the batch, so
        the gradients summed over passes and ranks are those of the whole batch on one process.
        """
        world, lengths = self.world, self.trainee.lengths
        if self.on_cpu and self.state.step % TRIM_EVERY == 0:
            release_free_heap()  # last steps' activations left holes: their pages go back
        mine = rank_slices(batch, lengths, world.size)[world.rank] if world.distributed else batch
        passes = (
            rank_slices(mine, lengths, self.config.grad_accum)
            if self.config.grad_accum > 1
            else [mine]
        )
        local, right, counts = 0.0, 0, False
        for part in passes:
            if not part and not self.trainee.every_rank:
                continue  # no rows for this rank here; its gradient adds nothing
            loss, correct = self.trainee.batch_loss(part)
            share = len(part) / len(batch)
            local += float(loss.item()) * share  # .item() syncs; once per pass is cheap
            if correct is not None:
                right, counts = right + correct, True
            # a non-finite loss is back-propagated too (its gradient is dropped after the
            # agreement): every rank must run the same backward passes (collectives)
            scaler.scale(loss * share).backward()
        if not world.distributed:
            return local, (right if counts else None), signalled
        agreed = sum_across(world, [local, float(right), float(signalled), float(counts)])
        total, right, stops, counted = agreed
        return total, (int(right) if counted else None), stops > 0

    def agree(self, signalled: bool) -> bool:
        """Whether any rank was signalled to stop (the same answer on every rank)."""
        return sum_across(self.world, [float(signalled)])[0] > 0

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
        if self.on_evaluation is not None:
            self.ask_to_go_on(epoch)

    def ask_to_go_on(self, epoch: int) -> None:
        """Hand the evaluation to the caller's hook (on the first rank); every rank stops if it
        says so."""
        state, rows = self.state, len(self.trainee.lengths)
        done = min(state.batch * self.config.batch_size, rows)
        last = epoch == self.config.epochs and done == rows
        examples = (epoch - 1) * rows + done
        seen = Evaluation(epoch, state.step, examples, state.last_dev, state.best, last)
        stop = bool(self.on_evaluation(seen)) if self.world.is_main else False
        if self.agree(stop):
            raise Stopped(
                f"stopped after the evaluation at step {state.step} (asked by the caller)"
            )

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
        if self.config.save_total_limit == 0:
            barrier(self.world)
            return None
        generators = gather_objects(self.world, rng_state())  # every rank's, for an exact resume
        if not self.world.is_main:
            barrier(self.world)
            return None
        state.world_size = self.world.size
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
            generators,
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
