"""Resumable checkpoints: everything a run needs to continue exactly where it stopped.

A checkpoint is a folder ``checkpoint-<step>`` in the run directory: the model in the same format
as a finished run (so ``predict --checkpoint`` can use it), the optimizer, scheduler and gradient
scaler states, every random generator, the epoch's batch order and position, and the counters and
metrics so far. It is written under a temporary name and renamed when complete, so a crash or a
full disk in the middle leaves the previous checkpoint as it was. Model files byte-identical to
the run's own (the best model is the latest) are hard links, not second copies. A finished run
needs none of this: ``drop_checkpoints`` removes the checkpoints when it ends (unless
``--keep-checkpoints``), and ``--checkpoint best`` then means the run's own model.

Only ``torch.load(weights_only=True)`` reads these files back: nothing is unpickled.
"""

from __future__ import annotations

import contextlib
import filecmp
import json
import logging
import os
import random
import re
import shutil
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bertfit.errors import ModelError
from bertfit.files import save_file_atomic, temporary_dir, write_json
from bertfit.rundir import (
    BEST_MODEL,
    CHECKPOINT_PREFIX,
    TRAINER_STATE,
    is_finished,
    read_meta,
    read_results,
)

log = logging.getLogger("bertfit")
_NAME = re.compile(rf"^{CHECKPOINT_PREFIX}(\d+)$")


@dataclass
class Checkpoint:
    """A complete checkpoint folder and its trainer state."""

    path: Path
    step: int
    state: dict


def list_checkpoints(run_dir: str | os.PathLike) -> list[Checkpoint]:
    """The complete checkpoints of a run, oldest first (temporary folders are not listed)."""
    found = []
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return found
    for path in run_dir.iterdir():
        match = _NAME.match(path.name)
        if not (match and (path / TRAINER_STATE).is_file()):
            continue
        try:
            state = json.loads((path / TRAINER_STATE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # damaged by hand; the others still count
        found.append(Checkpoint(path, int(match.group(1)), state))
    return sorted(found, key=lambda c: c.step)


def last_checkpoint(run_dir: str | os.PathLike) -> Checkpoint | None:
    checkpoints = list_checkpoints(run_dir)
    return checkpoints[-1] if checkpoints else None


def best_checkpoint(run_dir: str | os.PathLike) -> Checkpoint | None:
    """The checkpoint with the best dev score among those saved right after an evaluation."""
    scored = [c for c in list_checkpoints(run_dir) if c.state.get("dev_score") is not None]
    if not scored:
        return None
    return max(scored, key=lambda c: (c.state["dev_score"], -c.step))


def find_checkpoint(run_dir: str | os.PathLike, which: str) -> Checkpoint:
    """``best``, ``last``, a step number or a folder name: the checkpoint ``--checkpoint`` names."""
    checkpoints = list_checkpoints(run_dir)
    if not checkpoints:
        return _without_checkpoints(Path(run_dir), which)
    if which == "last":
        return checkpoints[-1]
    if which == "best":
        return best_checkpoint(run_dir) or checkpoints[-1]
    step = which.removeprefix(CHECKPOINT_PREFIX)
    for checkpoint in checkpoints:
        if step.isdigit() and checkpoint.step == int(step):
            return checkpoint
    names = ", ".join(c.path.name for c in checkpoints)
    raise ModelError(f"{run_dir}: no checkpoint {which!r}; choose best, last or one of {names}")


def _without_checkpoints(run_dir: Path, which: str) -> Checkpoint:
    """A finished run with no checkpoint left: ``best`` is the run's own model (the best one, by
    construction), with a note; anything else is refused, saying why there is none."""
    if not is_finished(run_dir):
        never = _saved_none(run_dir)
        raise ModelError(
            f"{run_dir}: has no complete checkpoint" + (f" ({never})" if never else "")
        )
    why = _saved_none(run_dir) or (
        "its checkpoints were removed when the run finished (train with --keep-checkpoints "
        "to keep them)"
    )
    if which != "best":
        raise ModelError(
            f"{run_dir}: no checkpoint {which!r}: {why}; without --checkpoint, or with "
            "--checkpoint best, it uses the run's own model (the best one)"
        )
    try:
        results = read_results(run_dir)
    except (OSError, ValueError) as err:
        raise ModelError(f"{run_dir}: damaged run files ({err})") from None
    step = int(results.get("best_step") or 0)
    log.warning(f"note: {run_dir}: {why}; --checkpoint best is the run's own model (step {step})")
    state = {"step": step, "dev": results.get("dev", {})}
    cut, labels = results.get("thresholds"), results.get("labels")
    if cut and labels:
        state["thresholds"] = [cut[label] for label in labels]
    return Checkpoint(run_dir, step, state)


def _saved_none(run_dir: Path) -> str | None:
    """Why the run has no checkpoint at all, when it was trained to save none."""
    try:
        saved = read_meta(run_dir).config
    except (OSError, ValueError, TypeError):
        return None
    if saved.get("save_total_limit") == 0:
        return "it was trained with --save-total-limit 0, which saves none"
    return None


def drop_checkpoints(run_dir: Path) -> list[str]:
    """Remove every checkpoint of a finished run (and half-written ones); returns their names.

    Each is renamed to a temporary name first, so a kill in the middle never leaves a
    half-deleted folder that looks complete.
    """
    names = []
    for checkpoint in list_checkpoints(run_dir):
        doomed = checkpoint.path.with_name(f".{checkpoint.path.name}.drop.tmp")
        try:
            os.replace(checkpoint.path, doomed)
        except OSError as err:  # the run has finished all the same: say so, do not fail it
            log.warning(f"warning: could not remove {checkpoint.path} ({err})")
            continue
        names.append(checkpoint.path.name)
    _fsync_dir(run_dir)
    remove_stale_temporaries(run_dir)
    return names


def remove_stale_temporaries(run_dir: Path) -> None:
    """Delete half-written checkpoint folders a killed run left behind."""
    for path in run_dir.glob(f".{CHECKPOINT_PREFIX}*.tmp"):
        shutil.rmtree(path, ignore_errors=True)


def save_checkpoint(
    run_dir: Path,
    step: int,
    write_model,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
    state: dict,
    order: list[list[int]],
    rng_states: list[dict] | None = None,
) -> Path:
    """Write ``checkpoint-<step>`` completely under a temporary name, then rename it into place.

    ``write_model(folder)`` writes the model; ``order`` is the current epoch's global batch
    order; ``rng_states`` every rank's random generators (this process's alone by default).
    """
    rng_states = rng_states or [rng_state()]
    final = run_dir / f"{CHECKPOINT_PREFIX}{step}"
    tmp = temporary_dir(run_dir, f".{CHECKPOINT_PREFIX}{step}.")
    try:
        write_model(tmp)
        _link_identical(tmp, run_dir)
        _keep_best_model(run_dir, [p.name for p in tmp.iterdir() if p.is_file()], tmp / BEST_MODEL)
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save(scaler.state_dict(), tmp / "scaler.pt")
        for rank, generators in enumerate(rng_states):
            torch.save(generators, tmp / _rng_file(rank))
        torch.save(_order_tensors(order), tmp / "sampler.pt")
        write_json(tmp / TRAINER_STATE, state)
        _sync_folder(tmp)
        if final.exists():  # the same step saved again (after a resume): the new one replaces it
            old = final.with_name(f".{final.name}.old.tmp")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(run_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def load_training_state(path: Path, optimizer, scheduler, scaler) -> list[list[int]]:
    """Restore optimizer, scheduler and scaler from a checkpoint; returns its batch order."""
    optimizer.load_state_dict(_load(path / "optimizer.pt"))
    scheduler.load_state_dict(_load(path / "scheduler.pt"))
    scaler_state = _load(path / "scaler.pt")
    if scaler_state:
        scaler.load_state_dict(scaler_state)
    return _order_lists(_load(path / "sampler.pt"))


def restore_best_model(path: Path, run_dir: Path) -> None:
    """Put back the run's best model as it was at the checkpoint.

    A run killed after the checkpoint may have saved a newer best model, which the resumed run
    might not reach again (on hardware that is not bit-deterministic); the best model must match
    the resumed run's own record of it.
    """
    kept = path / BEST_MODEL
    if not kept.is_dir():
        return
    for item in kept.iterdir():
        target = run_dir / item.name
        if target.exists() and os.path.samefile(item, target):
            continue
        save_file_atomic(lambda tmp, item=item: shutil.copyfile(item, tmp), target)


def _link_identical(folder: Path, run_dir: Path) -> None:
    """Replace each file of ``folder`` that is byte-identical to the run's file of the same name
    by a hard link to it: when the best model is the latest, the checkpoint holds no second copy.

    Safe because the run's files are only ever replaced by rename, never rewritten in place.
    """
    for item in folder.iterdir():
        theirs = run_dir / item.name
        if not (item.is_file() and theirs.is_file()):
            continue
        if theirs.stat().st_size != item.stat().st_size or not filecmp.cmp(item, theirs, False):
            continue
        link = item.with_name(f".{item.name}.link")
        try:
            os.link(theirs, link)
            os.replace(link, item)
        except OSError:  # a file system without hard links: the copy stays
            with contextlib.suppress(FileNotFoundError):
                os.unlink(link)


def _keep_best_model(run_dir: Path, names: list[str], folder: Path) -> None:
    """Hard-link the run's current best model files into the checkpoint: no extra space until a
    better model replaces them (each save renames new files into place, never rewrites)."""
    present = [name for name in names if (run_dir / name).is_file()]
    if not present:
        return  # no evaluation has saved a best model yet
    folder.mkdir()
    for name in present:
        try:
            os.link(run_dir / name, folder / name)
        except OSError:  # a file system without hard links
            shutil.copyfile(run_dir / name, folder / name)


def _rng_file(rank: int) -> str:
    return "rng.pt" if rank == 0 else f"rng-rank{rank}.pt"


def restore_rng(path: Path, rank: int = 0, seed: int | None = None) -> None:
    """Put this rank's random generators back as they were when the checkpoint was written.

    A rank the checkpoint has no state for (the run resumes on more processes than it was saved
    with) takes rank 0's generators with its torch generator reseeded for this rank and step
    (``seed``), so its dropout differs from rank 0's and is still reproducible.
    """
    own = path / _rng_file(rank)
    _restore_generators(_load(own if own.is_file() else path / _rng_file(0)))
    if rank and not own.is_file() and seed is not None:
        torch.manual_seed(seed)


def _restore_generators(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy = state["numpy"]
    np.random.set_state(
        (
            numpy["kind"],
            numpy["keys"].numpy().astype(np.uint32),
            numpy["pos"],
            numpy["has_gauss"],
            numpy["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def rng_state() -> dict:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    """Keep the last ``keep`` checkpoints and the best one; delete the rest, oldest first."""
    checkpoints = list_checkpoints(run_dir)
    best = best_checkpoint(run_dir)
    for checkpoint in checkpoints[: max(0, len(checkpoints) - keep)]:
        if best is None or checkpoint.path != best.path:
            shutil.rmtree(checkpoint.path, ignore_errors=True)


def _load(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelError(f"{path}: missing; this checkpoint is incomplete") from None
    except Exception as err:  # torch raises many kinds for a damaged file
        raise ModelError(f"{path}: cannot be read ({type(err).__name__}: {err})") from None


def _order_tensors(order: list[list[int]]) -> dict[str, torch.Tensor]:
    flat = [i for batch in order for i in batch]
    return {
        "indices": torch.tensor(flat, dtype=torch.int64),
        "sizes": torch.tensor([len(batch) for batch in order], dtype=torch.int64),
    }


def _order_lists(stored: dict[str, torch.Tensor]) -> list[list[int]]:
    flat = stored["indices"].tolist()
    order, start = [], 0
    for size in stored["sizes"].tolist():
        order.append(flat[start : start + size])
        start += size
    return order


def _sync_folder(folder: Path) -> None:
    """Flush every file to disk before the rename makes the folder visible as complete."""
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a directory be fsynced
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class StopSignals:
    """Turn the first SIGINT/SIGTERM into a request to stop at the next step boundary.

    The loop checks ``requested`` after each optimizer step, saves a checkpoint and stops. A
    second Ctrl-C quits at once (the last complete checkpoint stays valid).
    """

    def __init__(self, on_request=None) -> None:
        self.requested: int | None = None
        self._previous: dict[int, Any] = {}
        self._on_request = on_request

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for number in (signal.SIGINT, signal.SIGTERM):
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)

    def _handle(self, number: int, frame) -> None:
        if self.requested is not None and number == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = number
        if self._on_request is not None:
            self._on_request(number)

    @property
    def exit_code(self) -> int:
        return 128 + int(self.requested or signal.SIGINT)
