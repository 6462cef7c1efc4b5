"""Where a training step's time goes: torch.profiler over bertfit's own loop on SST-2.

Trains the default encoder on the first ``--rows`` SST-2 rows (batch 32, 1 epoch) through
``bertfit.train`` and profiles the optimizer steps from the 20th to the first evaluation
(the first steps warm up the allocator and the kernels). Prints the operators by self CPU
time and writes the table to ``benchmarks/results/step_profile-<date>.txt``.

    python benchmarks/step_profile.py                 # 3,200 rows: about 80 profiled steps
    python benchmarks/step_profile.py --rows 1600 --extra precision=fp32
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import tempfile
from pathlib import Path

import torch

import bertfit
from bertfit.training import fit as fit_module

REPO_ROOT = Path(__file__).resolve().parents[1]
WARM_STEPS = 20  # steps before profiling starts


def data_root() -> Path:
    env = os.environ.get("BERTFIT_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "datasets"


def profile_training(config: bertfit.TrainConfig) -> torch.profiler.profile:
    """Run ``bertfit.train`` with the profiler on from step WARM_STEPS to the first evaluation."""
    profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
    forward_backward, evaluate = fit_module._Loop.forward_backward, fit_module._Loop.evaluate
    calls = {"steps": 0, "on": False}

    def counted(self, *args, **kwargs):
        calls["steps"] += 1
        if calls["steps"] == WARM_STEPS:
            profiler.__enter__()
            calls["on"] = True
        return forward_backward(self, *args, **kwargs)

    def stop_then_evaluate(self, *args, **kwargs):
        if calls["on"]:
            profiler.__exit__(None, None, None)
            calls["on"] = False
        return evaluate(self, *args, **kwargs)

    fit_module._Loop.forward_backward = counted
    fit_module._Loop.evaluate = stop_then_evaluate
    try:
        bertfit.train(config)
    finally:
        fit_module._Loop.forward_backward, fit_module._Loop.evaluate = forward_backward, evaluate
    return profiler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3200)
    parser.add_argument("--extra", action="append", default=[], help="TrainConfig field=value")
    args = parser.parse_args()
    sst2 = data_root() / "glue" / "SST-2"
    extra = dict(item.split("=", 1) for item in args.extra)
    with tempfile.TemporaryDirectory() as out:
        config = bertfit.TrainConfig(
            train=str(sst2 / "train.tsv.gz"), dev=str(sst2 / "dev.tsv"),
            text_column="sentence", label_column="label", train_limit=args.rows, epochs=1,
            batch_size=32, output=out, overwrite=True, progress=False, **extra,
        )  # fmt: skip
        profiler = profile_training(config)
    steps = args.rows // 32 - WARM_STEPS + 1
    table = profiler.key_averages().table(
        sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=45
    )
    header = f"# step_profile {dt.date.today()}: {steps} steps of batch 32, SST-2, {extra or ''}\n"
    path = REPO_ROOT / "benchmarks" / "results" / f"step_profile-{dt.date.today()}.txt"
    path.write_text(header + table + "\n")
    print(header + table)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
