"""One process against several: the same SST-2 training in 1 process (all cores) and with
``--nproc N`` (cores shared out), side by side in one run.

Each job fine-tunes the default encoder on the first ``--train-limit`` rows of GLUE SST-2 for one
epoch (batch 32, the same global batch in both) and is scored on the SST-2 dev set; the table
shows training examples/s of the whole job (``results.json``), dev accuracy and wall time, and
the ratio. The jobs run one after another (``--rounds`` times, interleaved); run it on an
otherwise idle machine. Results go to ``benchmarks/results/processes-<date>.json``.

    python benchmarks/processes.py                     # 8000 rows, 1 vs 2 processes
    python benchmarks/processes.py --train-limit 512   # a smoke test
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def sst2_files(data_root: Path, limit: int, folder: Path) -> tuple[Path, Path]:
    """The first ``limit`` training rows (a temporary file) and the dev file."""
    glue = data_root / "glue" / "SST-2"
    train = glue / "train.tsv.gz" if (glue / "train.tsv.gz").exists() else glue / "train.tsv"
    dev = glue / "dev.tsv"
    if not train.exists():  # the flat layout: sst2/train.tsv
        train, dev = data_root / "sst2" / "train.tsv", data_root / "sst2" / "dev.tsv"
    opener = gzip.open if train.suffix == ".gz" else open
    with opener(train, "rt", encoding="utf-8") as handle:
        lines = [next(handle) for _ in range(limit + 1)]
    sample = folder / "train.tsv"
    sample.write_text("".join(lines), encoding="utf-8")
    return sample, dev


def run_job(name: str, extra: list[str], train: Path, dev: Path, output: Path) -> dict:
    command = [sys.executable, "-m", "bertfit", "train", "--train", str(train), "--dev", str(dev)]
    command += ["--text-column", "sentence", "--epochs", "1", "--batch-size", "32"]
    command += ["--no-progress", "--overwrite", "--output", str(output), *extra]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode:
        sys.exit(f"{name} failed:\n{done.stderr[-3000:]}")
    results = json.loads((output / "results.json").read_text())
    return {
        "job": name,
        "examples_per_second": results["train_examples_per_second"],
        "dev_accuracy": results["dev"]["accuracy"],
        "wall_seconds": round(wall, 1),
        "processes": results.get("processes", 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-limit", type=int, default=8000)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1)
    default_data = Path(os.environ.get("BERTFIT_DATA", ROOT.parent / "shared" / "datasets"))
    parser.add_argument("--data", type=Path, default=default_data)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    jobs = {
        f"1 process, {cores} threads": ["--threads", str(cores)],
        f"--nproc {args.nproc}, {max(1, cores // args.nproc)} thread(s) each": [
            "--nproc",
            str(args.nproc),
        ],
    }
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        train, dev = sst2_files(args.data, args.train_limit, Path(tmp))
        for round_ in range(args.rounds):
            for name, extra in jobs.items():
                rows.append(run_job(name, extra, train, dev, Path(tmp) / f"run{round_}"))
                print(json.dumps(rows[-1]), flush=True)
    one = [r["examples_per_second"] for r in rows if r["processes"] == 1]
    many = [r["examples_per_second"] for r in rows if r["processes"] > 1]
    ratio = (sum(many) / len(many)) / (sum(one) / len(one))
    print(f"\n{'job':40} {'examples/s':>11} {'dev acc':>8} {'wall s':>7}")
    for r in rows:
        print(
            f"{r['job']:40} {r['examples_per_second']:11.1f} {r['dev_accuracy']:8.4f} "
            f"{r['wall_seconds']:7.1f}"
        )
    print(f"examples/s, {args.nproc} processes / 1 process: {ratio:.2f}x")
    out = ROOT / "benchmarks" / "results" / f"processes-{datetime.date.today()}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"args": vars(args) | {"data": str(args.data)}, "rows": rows,
                               "ratio": ratio, "cores": cores}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
