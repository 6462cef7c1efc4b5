"""A training recipe against another over several seeds: mean, spread and each run's 95 % interval.

    python benchmarks/recipe_seeds.py --name sst2 --seeds 1 2 3 \
        --common "--train T --dev D --text-column sentence --train-limit 8000 --epochs 1" \
        --recipe default "" --recipe tuned "--lr 1e-4 --batch-size 16"

Recipes run interleaved (seed 1 of each, then seed 2 ...), one process per run, so drift on a
shared machine hits them alike. Results: benchmarks/results/recipe_seeds-<name>-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_once(common: list[str], extra: list[str], seed: int, folder: Path) -> dict:
    command = [sys.executable, "-m", "bertfit", "train", *common, *extra, "--seed", str(seed)]
    command += ["--output", str(folder), "--no-progress", "--overwrite"]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    results = json.loads((folder / "results.json").read_text())
    metric = results["metric"]
    where = "test" if results.get("test") else "dev"
    interval = results.get(f"{where}_ci", {}).get(metric)
    return {
        "seed": seed,
        "split": where,
        "metric": metric,
        "value": results[where][metric],
        "interval": interval,
        "seconds": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--common", required=True, help="train options every run shares")
    parser.add_argument("--recipe", nargs=2, action="append", metavar=("NAME", "OPTIONS"))
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    args = parser.parse_args()
    common = shlex.split(args.common)
    recipes = {name: shlex.split(options) for name, options in args.recipe}
    runs: dict[str, list[dict]] = {name: [] for name in recipes}
    with tempfile.TemporaryDirectory(prefix="recipe-") as scratch:
        for seed in args.seeds:
            for name, extra in recipes.items():
                run = run_once(common, extra, seed, Path(scratch) / name)
                runs[name].append(run)
                print(json.dumps({"recipe": name, **run}), flush=True)
    summary = {}
    for name, done in runs.items():
        values = [r["value"] for r in done]
        summary[name] = {
            "options": " ".join(recipes[name]),
            "mean": round(statistics.mean(values), 4),
            "min": round(min(values), 4),
            "max": round(max(values), 4),
            "stdev": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
            "runs": done,
        }
    record = {
        "date": datetime.date.today().isoformat(),
        "name": args.name,
        "common": args.common,
        "seeds": args.seeds,
        "recipes": summary,
    }
    target = Path(__file__).parent / "results" / f"recipe_seeds-{args.name}-{record['date']}.json"
    target.write_text(json.dumps(record, indent=2) + "\n")
    for name, s in summary.items():
        print(
            f"{name}: mean {s['mean']:.4f} (min {s['min']:.4f}, max {s['max']:.4f}) {s['options']}"
        )


if __name__ == "__main__":
    main()
