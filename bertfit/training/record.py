"""What a run writes as it goes: metrics.jsonl, steps.jsonl, TensorBoard and the progress bar."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from tqdm.auto import tqdm

from bertfit.errors import ConfigError
from bertfit.files import append_jsonl, write_text
from bertfit.rundir import METRICS, STEPS, TENSORBOARD
from bertfit.training.state import TrainState

POINTS = 200  # loss/lr points per run in steps.jsonl: enough for a smooth curve in the report


def tensorboard_writer_class():
    """TensorBoard's SummaryWriter; a missing package is a one-line config error."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError(
            "--tensorboard needs the tensorboard package: pip install tensorboard"
        ) from None
    return SummaryWriter


def open_tensorboard(output: Path, purge_step: int | None = None):
    """A TensorBoard writer into ``output/tensorboard`` (the same scalars as the report)."""
    return tensorboard_writer_class()(str(output / TENSORBOARD), purge_step=purge_step)


class Recorder:
    """Appends evaluations and step records to the run's files (and TensorBoard).

    Step records are held back until the next checkpoint or epoch end, so ``steps.jsonl`` never
    runs ahead of the last checkpoint by more than a resume cuts back.
    """

    def __init__(
        self,
        output: Path,
        total_steps: int,
        tensorboard: bool,
        resumed_at: int | None,
        writes: bool = True,
    ):
        self.output = output
        self.writes = writes  # False on every training process but the first: one writer
        self.every = max(1, total_steps // POINTS)
        self.pending: list[dict] = []
        # a resumed run drops the TensorBoard events logged after its checkpoint
        purge = None if resumed_at is None else resumed_at + 1
        self.board = open_tensorboard(output, purge) if tensorboard and writes else None

    def step(self, state: TrainState, epoch: int, loss: float, lr: float, seconds: float) -> None:
        if state.step % self.every:
            return
        self.pending.append(
            {
                "step": state.step,
                "epoch": epoch,
                "loss": round(loss, 5),
                "lr": lr,
                "examples_per_second": round(state.seen / seconds, 2),
            }
        )

    def evaluation(self, state: TrainState, record: dict, stats: dict) -> None:
        if self.writes:
            append_jsonl(self.output / METRICS, record)
        state.metrics.append(record)
        if self.board is None:
            return
        scalars = {f"train/{k}": v for k, v in stats.items()}
        scalars |= {f"dev/{k}": v for k, v in record["dev"].items()}
        for name, value in scalars.items():
            self.board.add_scalar(name, value, state.step)

    def flush(self, state: TrainState) -> None:
        for record in self.pending:
            if self.writes:
                append_jsonl(self.output / STEPS, record)
            state.steps.append(record)
            if self.board is not None:
                for name in ("loss", "lr", "examples_per_second"):
                    self.board.add_scalar(f"step/{name}", record[name], record["step"])
        self.pending.clear()

    def close(self) -> None:
        if self.board is not None:
            self.board.close()


def rewrite_history(output: Path, state: TrainState) -> None:
    """Cut metrics.jsonl and steps.jsonl back to what the checkpoint had seen."""
    for name, records in ((METRICS, state.metrics), (STEPS, state.steps)):
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        write_text(output / name, text)


def epoch_bar(epoch: int, epochs: int, total: int, done: int, enabled: bool) -> tqdm:
    return tqdm(
        total=total,
        initial=done,
        desc=f"epoch {epoch}/{epochs}",
        unit="ex",
        disable=not enabled,
        file=sys.stderr,
        mininterval=0.5,
        leave=False,
    )


class Clock:
    """Training seconds of the current epoch, with evaluation pauses left out."""

    def __init__(self, already: float = 0.0) -> None:
        self.started = time.perf_counter() - already

    def seconds(self) -> float:
        return time.perf_counter() - self.started

    def pause_for(self, seconds: float) -> None:
        self.started += seconds
