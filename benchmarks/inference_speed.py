"""Inference speed of a fine-tuned classifier, side by side in one process, on SST-2 dev.

Contenders (the same run's weights in each):
- ``bertfit torch``: ``Run.logits`` (length-sorted batches, bf16 autocast where the CPU has it,
  the lean forward of ``models/fastbert.py``)
- ``bertfit torch, HF forward``: the same with the model's own ``forward``
- ``bertfit onnx fp32`` / ``bertfit onnx int8``: ``--backend onnx`` with RUN/onnx/model.onnx and
  model_quantized.onnx (made by ``bertfit export RUN --format onnx --quantize int8``)
- ``pipeline``: ``transformers.pipeline("text-classification")`` with its defaults
- ``plain loop``: ``model(**tokenizer(batch, padding=True))`` in fp32, in input order

For each: sentences/s at batch 1, 32 and 256; p50/p99 latency of one sentence at batch 1
(tokenising included); accuracy on all 872 dev sentences (so speed is never bought with accuracy).

Usage: ``python benchmarks/inference_speed.py --run runs/sst2 [--single 300]``
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from datetime import date
from pathlib import Path

import numpy as np


def dev_rows(path: Path) -> tuple[list[str], np.ndarray]:
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
    return [r[0] for r in rows], np.array([int(r[1]) for r in rows])


def bertfit_contender(
    run_dir: str, backend: str, onnx_file: str | None = None, own_forward: bool = False
):
    """predict(texts, batch_size) -> predicted label indices, through ``Run``."""
    from bertfit.inference.run import load

    run = load(run_dir, device="cpu", backend=backend, onnx_file=onnx_file)
    if own_forward:  # the model's own forward instead of the lean one, same bf16 autocast
        import torch

        from bertfit.runtime import autocast, pick_precision

        dtype = pick_precision("auto", run.device)

        @torch.inference_mode()
        def forward(batch):
            with autocast(run.device, dtype):
                return run.model(**batch).logits.float().numpy()

        run.forward = forward

    def predict(texts: list[str], batch_size: int) -> np.ndarray:
        return run.logits(texts, None, batch_size).argmax(axis=1)

    return predict


def pipeline_contender(run_dir: str):
    from transformers import pipeline

    pipe = pipeline("text-classification", model=run_dir, device="cpu")
    names = pipe.model.config.id2label

    def predict(texts: list[str], batch_size: int) -> np.ndarray:
        out = pipe(texts, batch_size=batch_size) if batch_size > 1 else [pipe(t)[0] for t in texts]
        by_name = {v: k for k, v in names.items()}
        return np.array([by_name[o["label"]] for o in out])

    return predict


def plain_contender(run_dir: str):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(run_dir)
    model = AutoModelForSequenceClassification.from_pretrained(run_dir).eval()

    @torch.inference_mode()
    def predict(texts: list[str], batch_size: int) -> np.ndarray:
        out = []
        for i in range(0, len(texts), batch_size):
            batch = tokenizer(
                texts[i : i + batch_size],
                padding=True,
                truncation=True,
                max_length=128,
                return_tensors="pt",
            )
            out.append(model(**batch).logits.argmax(-1).numpy())
        return np.concatenate(out)

    return predict


def measure(predict, texts: list[str], labels: np.ndarray, single: int, label_of) -> dict:
    predict(texts[:64], 32)  # warm-up
    result = {}
    for batch in (1, 32, 256):
        subset = texts[:single] if batch == 1 else texts
        started = time.perf_counter()
        predict(subset, batch)
        result[f"sentences_per_s_b{batch}"] = round(
            len(subset) / (time.perf_counter() - started), 1
        )
    latencies = []
    for text in texts[:single]:
        started = time.perf_counter()
        predict([text], 1)
        latencies.append(1000 * (time.perf_counter() - started))
    result["p50_ms_b1"] = round(float(np.percentile(latencies, 50)), 2)
    result["p99_ms_b1"] = round(float(np.percentile(latencies, 99)), 2)
    predicted = label_of(predict(texts, 32))
    result["accuracy"] = round(float((predicted == labels).mean()), 4)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True)
    parser.add_argument("--dev", default="../shared/datasets/glue/SST-2/dev.tsv")
    parser.add_argument("--single", type=int, default=300, help="sentences timed one by one")
    parser.add_argument("--only", default="", help="comma-separated contender names")
    parser.add_argument("--out", default=f"benchmarks/results/inference_speed-{date.today()}.json")
    args = parser.parse_args()

    import torch

    from bertfit.inference.run import load
    from bertfit.runtime import available_cores

    torch.set_num_threads(available_cores())
    texts, labels = dev_rows(Path(args.dev))
    run = load(args.run, device="cpu")
    run_index = [int(label) for label in run.labels]  # run label i -> SST-2 label
    onnx = Path(args.run) / "onnx"
    contenders = {
        "bertfit torch": lambda: bertfit_contender(args.run, "torch"),
        "bertfit torch, HF forward": lambda: bertfit_contender(args.run, "torch", own_forward=True),
        "bertfit onnx fp32": lambda: bertfit_contender(args.run, "onnx", str(onnx / "model.onnx")),
        "bertfit onnx int8": lambda: bertfit_contender(
            args.run, "onnx", str(onnx / "model_quantized.onnx")
        ),
        "pipeline": lambda: pipeline_contender(args.run),
        "plain loop": lambda: plain_contender(args.run),
    }
    wanted = [n for n in args.only.split(",") if n] or list(contenders)
    results = {
        "run": args.run,
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "contenders": {},
    }
    for name in wanted:
        predict = contenders[name]()
        bertfit_side = name.startswith("bertfit")
        label_of = (lambda p: np.array(run_index)[p]) if bertfit_side else (lambda p: np.asarray(p))
        results["contenders"][name] = measure(predict, texts, labels, args.single, label_of)
        print(name, results["contenders"][name], flush=True)
    report(results)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


def report(results: dict) -> None:
    rows = results["contenders"]
    print(
        f"{'contender':<20} {'b1/s':>7} {'b32/s':>7} {'b256/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'acc':>7}"
    )
    for name, r in rows.items():
        print(
            f"{name:<20} {r['sentences_per_s_b1']:>7} {r['sentences_per_s_b32']:>7} "
            f"{r['sentences_per_s_b256']:>7} {r['p50_ms_b1']:>7} {r['p99_ms_b1']:>7} {r['accuracy']:>7}"
        )
    if "bertfit onnx int8" in rows and "bertfit torch" in rows:
        int8, torch_, pipe = rows["bertfit onnx int8"], rows["bertfit torch"], rows.get("pipeline")
        print(
            f"int8 / bertfit torch at batch 32: {int8['sentences_per_s_b32'] / torch_['sentences_per_s_b32']:.2f}x"
        )
        if pipe:
            print(
                f"int8 / pipeline at batch 32: {int8['sentences_per_s_b32'] / pipe['sentences_per_s_b32']:.2f}x"
            )


if __name__ == "__main__":
    main()
