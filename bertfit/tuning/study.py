"""The Optuna study behind ``bertfit tune``: its storage, sampler and pruner, and the trial budget
that holds across reruns, workers and machines.

A study's ``--n-trials`` is a total: trials that completed, were pruned, failed cleanly (a
diverging learning rate) or are running count; a trial whose process was killed does not, and its
parameters are queued again. Killed trials are found two ways: on this machine by their process
id, elsewhere by Optuna's heartbeat (a RUNNING trial silent for ``GRACE_SECONDS``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bertfit.errors import ConfigError
from bertfit.tuning.space import Space, first_line

HEARTBEAT_SECONDS = 20
GRACE_SECONDS = 90
STUDY_NAME = "bertfit"
OPEN_ATTEMPTS = 5
RACES = ("already exists", "UNIQUE constraint", "duplicate key")

# user attributes a trial carries
COUNTED = "counted"  # failed cleanly: its slot is used (a diverged run is not re-run)
SURPLUS = "surplus"  # asked for after the budget was full (a race between workers): not a trial
HOST, PID = "host", "pid"
PRUNED_AT = "pruned_at"  # training examples seen when the pruner stopped the trial

log = logging.getLogger("bertfit")


def storage_url(given: str | None, output: Path) -> str:
    """``--storage``, or the SQLite file in the output folder."""
    return given or f"sqlite:///{(output / 'study.db').resolve()}"


def open_storage(url: str) -> Any:
    """An Optuna storage with heartbeats, or one line saying why it cannot be opened."""
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    engine: dict[str, Any] = {}
    if url.startswith("sqlite:"):
        path = url.split(":///", 1)[-1]
        if path and not Path(path).parent.is_dir():
            raise ConfigError(f"--storage {url}: the folder {Path(path).parent} does not exist")
        engine = {"connect_args": {"timeout": 120}}  # workers write in turn; wait, don't fail
    try:
        if "://" not in url:
            raise ValueError("not a database URL (sqlite:///PATH, postgresql://host/db, ...)")
        for attempt in range(OPEN_ATTEMPTS):
            try:
                with _creating(url), warnings.catch_warnings():
                    # heartbeats are "experimental" in Optuna's words
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    return RDBStorage(
                        url,
                        engine_kwargs=engine,
                        heartbeat_interval=HEARTBEAT_SECONDS,
                        grace_period=GRACE_SECONDS,
                        heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(2),
                    )
            except Exception as err:
                # workers on several machines creating a new database's tables at once
                if not any(r in str(err) for r in RACES) or attempt + 1 == OPEN_ATTEMPTS:
                    raise
                time.sleep(0.5 * (attempt + 1))
    except (ImportError, ModuleNotFoundError) as err:
        raise ConfigError(
            f"--storage {url}: the database driver is not installed ({err.name or err}); "
            "for PostgreSQL: pip install psycopg2-binary"
        ) from None
    except (ValueError, optuna.exceptions.OptunaError, Exception) as err:  # sqlalchemy errors
        raise ConfigError(
            f"--storage {safe_url(url)}: cannot be opened ({first_line(err)})"
        ) from None


@contextlib.contextmanager
def _creating(url: str) -> Iterator[None]:
    """Processes on this machine create a SQLite file's tables one at a time."""
    if not url.startswith("sqlite:///"):
        yield
        return
    from filelock import FileLock

    with FileLock(url.split(":///", 1)[1] + ".lock"):
        yield


def open_study(storage: Any, name: str, sampler: Any, pruner: Any) -> Any:
    import optuna

    try:
        return optuna.create_study(
            storage=storage,
            study_name=name,
            direction="maximize",  # every dev metric bertfit reports is higher-is-better
            sampler=sampler,
            pruner=pruner,
            load_if_exists=True,
        )
    except Exception as err:  # a storage that opened but cannot hold a study
        raise ConfigError(
            f"--storage: cannot create the study {name} ({first_line(err)})"
        ) from None


def make_sampler(kind: str, space: Space, seed: int, n_trials: int) -> Any:
    import optuna

    if kind == "grid":
        return optuna.samplers.GridSampler(space.grid(), seed=seed)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # a third of the budget (4 to 10 trials) explores at random before TPE models the results
    startup = max(4, min(10, n_trials // 3))
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, constant_liar=True)


def make_pruner(kind: str, first_report: int, last_report: int) -> Any:
    """Trials report at training examples seen: ``first_report`` is where the first evaluation
    falls, ``last_report`` the end of the longest trial the space allows."""
    import optuna

    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=max(1, first_report),
            max_resource=max(first_report + 1, last_report),
            reduction_factor=3,
        )
    if kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=0)
    return optuna.pruners.NopPruner()


def pick_sampler(given: str | None, space: Space) -> str:
    if given == "grid" and space.grid() is None:
        ranges = [p.name for p in space.params if p.kind != "choice"]
        raise ConfigError(
            f"--sampler grid needs a space of lists (name=a|b), but {', '.join(ranges)} "
            f"{'is a range' if len(ranges) == 1 else 'are ranges'} in {space.source}"
        )
    return given or ("grid" if space.grid() is not None else "tpe")


def budget(given: int | None, sampler: str, space: Space, default: int) -> int:
    if sampler != "grid":
        return given or default
    size = space.grid_size() or 0
    if given is not None and given > size:
        log.info(f"the grid has {size} points: the study runs {size} trials, not {given}")
    return min(given or size, size)


def counts(trial: Any) -> bool:
    """Whether a trial uses one of the study's --n-trials."""
    from optuna.trial import TrialState

    if trial.user_attrs.get(SURPLUS):
        return False
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING):
        return True
    return trial.state == TrialState.FAIL and bool(trial.user_attrs.get(COUNTED))


def used(study: Any) -> int:
    return sum(counts(t) for t in study.get_trials(deepcopy=False))


def is_surplus(study: Any, number: int, n_trials: int) -> bool:
    """Whether trial ``number`` came after the budget was full (two workers asked at once)."""
    earlier = [t for t in study.get_trials(deepcopy=False) if t.number < number and counts(t)]
    return len(earlier) >= n_trials


def trials(study: Any) -> list[Any]:
    """The study's trials, without the surplus ones."""
    return [t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get(SURPLUS)]


def mark_running_here(trial: Any) -> None:
    trial.set_user_attr(HOST, socket.gethostname())
    trial.set_user_attr(PID, os.getpid())


def fail_killed_trials(study: Any, storage: Any) -> list[int]:
    """RUNNING trials whose process on this machine is gone: marked failed and queued again."""
    from optuna.trial import TrialState

    host, failed = socket.gethostname(), []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = trial.user_attrs.get(PID)
        if trial.user_attrs.get(HOST) != host or pid is None or _alive(int(pid)):
            continue
        if storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
            study.enqueue_trial(trial.params, user_attrs={"rerun_of": trial.number})
            failed.append(trial.number)
    return failed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna's own log lines and warnings off for the length of a study (bertfit logs each trial
    itself)."""
    import optuna

    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module="optuna")
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(before)


def safe_url(url: str) -> str:
    """A URL without its password, for messages."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        auth, _, host = rest.rpartition("@")
        user = auth.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url
