"""How a failure in one of several training processes reaches the user: one line, once.

Every process meets the same config and data errors (rank 0 alone says them); a failure of one
process alone (out of memory on its GPU, a bug) is said by that process, naming it; a process
whose collective failed because another died says nothing (the other, or torchrun, says why).
The one-process path is untouched: errors go to the command as they are.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator

from bertfit.errors import BertfitError, OutOfMemory
from bertfit.training.distributed import World, is_peer_failure

PEER_FAILED = 3  # exit code of a process stopped by another's failure (it says nothing)
# how long such a process lingers before it exits: torchrun's agent reports the first process
# it sees end, and that should be the one that failed (its code says whether it spoke), not
# this one; the agent stops the lingering process itself when it notices
PEER_GRACE_SECONDS = 5.0
RANK_SPECIFIC = (OutOfMemory,)  # errors one process can meet alone


class ReportedError(BertfitError):
    """An error already said (or said by another process): the command only exits with its code."""

    def __init__(self, exit_code: int = 2) -> None:
        super().__init__("")
        self.exit_code = exit_code


class ProcessFailure(BertfitError):
    """An unexpected exception in one training process, as one line."""

    exit_code = 1


@contextlib.contextmanager
def one_line_errors(world: World) -> Iterator[None]:
    """Errors of this training process as the job should say them (see the module's text);
    ``BERTFIT_DEBUG=1`` keeps every process's own traceback."""
    if not world.distributed or os.environ.get("BERTFIT_DEBUG", "") not in ("", "0"):
        yield
        return
    try:
        yield
    except ReportedError:
        raise
    except BertfitError as err:
        if world.is_main:
            raise
        if not isinstance(err, RANK_SPECIFIC):
            raise ReportedError(err.exit_code) from None  # rank 0 says the same
        err.args = (f"process {world.rank}: {err}",)
        raise
    except Exception as err:
        if is_peer_failure(err):
            time.sleep(PEER_GRACE_SECONDS)
            raise ReportedError(PEER_FAILED) from None
        where = f" in process {world.rank}" if not world.is_main else ""
        raise ProcessFailure(
            f"internal error{where}: {type(err).__name__}: {err} "
            "(BERTFIT_DEBUG=1 shows the traceback)"
        ) from None
