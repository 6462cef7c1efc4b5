"""What a study's pruning and shared data save: every trial of a finished ``bertfit tune`` study
run again as a plain ``bertfit train`` (the same options, to the end, one process each), against
the study's own wall time.

    python benchmarks/tune_vs_plain.py STUDY_DIR --study-seconds 377 [--cache FRESH_DIR]

The first plain run starts from an empty tokenisation cache (``--cache``), as a user's first run
would; the others hit it, as a user's would. Results: benchmarks/results/tune_vs_plain-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

from bertfit.tuning.run import reproduce_command


def plain_commands(study_dir: Path) -> list[tuple[int, str, list[str]]]:
    """(trial number, state, command) for every trial that ran (completed, pruned or failed)."""
    from bertfit.config.tune import TuneConfig
    from bertfit.tuning.trial import Study, trial_config

    settings = json.loads((study_dir / "tune.json").read_text())
    base = TuneConfig(**settings["train"], output=str(study_dir)).train_config()
    holder = Study(base, None, study_dir, 0, None)  # only what trial_config reads
    storage = f"sqlite:///{(study_dir / 'study.db').resolve()}"
    study = optuna.load_study(study_name="bertfit", storage=storage)
    out = []
    for t in study.trials:
        if t.user_attrs.get("surplus") or not t.params:
            continue
        config = trial_config(holder, t.params, t.number)
        words = shlex.split(reproduce_command(config, Path("PLACEHOLDER")))
        out.append((t.number, t.state.name.lower(), words))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", type=Path)
    parser.add_argument("--study-seconds", type=float, required=True, help="the study's wall time")
    parser.add_argument("--cache", type=Path, default=None, help="an empty cache folder")
    args = parser.parse_args()
    cache = args.cache or Path(tempfile.mkdtemp(prefix="plain-cache-"))
    env = {**os.environ, "BERTFIT_CACHE": str(cache)}
    runs, total = [], 0.0
    with tempfile.TemporaryDirectory(prefix="plain-runs-") as scratch:
        for number, state, words in plain_commands(args.study):
            words[words.index("PLACEHOLDER")] = str(Path(scratch) / str(number))
            started = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-m", "bertfit", *words[1:], "--no-progress"],
                env=env, capture_output=True, text=True,
            )  # fmt: skip
            seconds = time.perf_counter() - started
            total += seconds
            result = json.loads((Path(scratch) / str(number) / "results.json").read_text())
            runs.append(
                {"trial": number, "study_state": state, "seconds": round(seconds, 1),
                 "rc": done.returncode, "dev": result["dev"].get(result["metric"])}
            )  # fmt: skip
            print(json.dumps(runs[-1]), flush=True)
            shutil.rmtree(Path(scratch) / str(number), ignore_errors=True)
    summary = {
        "date": datetime.date.today().isoformat(),
        "study": str(args.study),
        "study_seconds": args.study_seconds,
        "plain_seconds": round(total, 1),
        "saved_fraction": round(1 - args.study_seconds / total, 3),
        "runs": runs,
    }
    target = Path(__file__).parent / "results" / f"tune_vs_plain-{summary['date']}.json"
    target.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}))


if __name__ == "__main__":
    main()
