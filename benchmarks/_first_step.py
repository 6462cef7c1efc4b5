"""Run ``bertfit train ...`` only up to its first training step and record when that came.

Usage: ``python benchmarks/_first_step.py RESULT_FILE -- train --train T.tsv ...``

The first call of ``bertfit.training.fit._Loop.forward_backward`` writes ``time.time()`` to
RESULT_FILE and ends the process at once (``os._exit``: no evaluation, no clean-up). The caller
takes ``time.time()`` just before spawning this script, so the difference is the whole start-up
a user waits for: interpreter, imports, reading, tokenising (or the cache hit), model loading.
``suite.py`` uses it for its start-up table.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def stop_at_first_step(result_file: Path) -> None:
    """Replace the loop's forward/backward with one that records the time and exits."""
    from bertfit.training import fit

    def record_and_exit(*_args: object, **_kwargs: object) -> None:
        result_file.write_text(f"{time.time()!r}\n")
        os._exit(0)

    fit._Loop.forward_backward = record_and_exit


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[1] != "--":
        sys.stderr.write(__doc__.split("\n\n")[1] + "\n")
        return 2
    stop_at_first_step(Path(argv[0]))
    from bertfit.cli.main import main as bertfit_main

    return bertfit_main(argv[2:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
