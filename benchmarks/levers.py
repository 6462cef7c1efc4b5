"""The speed levers of issue 16 that are not yet in bertfit, measured side by side in one process.

Each part answers "would this pay for the job?" on the default encoder and real data:

- ``padding``: real tokens against the padded tokens that length-grouped batches compute (the
  most that sequence packing could save), and what packing into rows of 128-512 would cost in
  attention instead;
- ``step``: one training step (lean forward, loss, backward, clipped fused AdamW) at a short,
  a pair-sized and a long shape, under bf16 autocast with fp32 weights (bertfit today) against
  bf16 weights with fp32 master copies, against ``torch.compile`` of the forward with dynamic
  shapes (its compile time too), and at 1 against all intra-op threads;
- ``attention``: forward + backward of one attention block at 256 and 512 tokens: SDPA without
  and with dropout, the spelled-out path bertfit takes with dropout, and query chunks;
- ``interleaved``: autocast against bf16 weights with fp32 masters, alternating on two copies;
- ``compile-cache``: the compiled step's first-step time with an empty and a filled inductor cache.

    python benchmarks/levers.py                   # all parts, about 12 minutes on 2 cores
    python benchmarks/levers.py --parts step --steps 20

Results go to ``benchmarks/results/levers-<date>.json``. Run it on an otherwise idle machine.
"""

# ruff: noqa: B023  (every lambda here is timed at once, inside its own loop turn)
from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import suite  # noqa: E402  (benchmarks/suite.py: the same data readers)
import torch
import torch.nn.functional as F

from bertfit.data.packing import length_grouped_batches
from bertfit.models.dropout import FastDropout, use_fast_dropout
from bertfit.models.encoders import default_encoder
from bertfit.models.fastbert import lean_logits

REPO_ROOT = Path(__file__).resolve().parents[1]
BATCH = 32
# shapes of a training batch: SST-2's length-grouped batches are 8-60 tokens, SNLI pairs 20-70,
# IMDb 256 and 512 (long reviews fill the budget)
STEP_SHAPES = {"short (SST-2-like)": 24, "pairs (SNLI-like)": 48, "long (IMDb 256)": 256}


def data_root() -> Path:
    env = os.environ.get("BERTFIT_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "datasets"


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ---- padding: length grouping against packing -------------------------------------------------


def read_texts(root: Path) -> dict[str, tuple[list, int]]:
    """(texts or pairs, max length) per workload, read as the suite reads them."""
    sizes = suite.FULL
    sst2, _ = suite.sst2_rows(root, sizes)
    snli, _ = suite.snli_rows(root, sizes)
    imdb, _ = suite.imdb_rows(root, sizes)
    return {
        "SST-2 8,000": ([r["text"] for r in sst2], 128),
        "SNLI 8,858 pairs": ([[r["text"], r["pair"]] for r in snli], 128),
        "IMDb 1,000 at 256": ([r["text"] for r in imdb], 256),
        "IMDb 1,000 at 512": ([r["text"] for r in imdb], 512),
    }


def token_lengths(tokenizer, texts: list, max_length: int) -> np.ndarray:
    if texts and isinstance(texts[0], list):
        enc = tokenizer(
            [a for a, _ in texts], [b for _, b in texts], truncation=True, max_length=max_length
        )
    else:
        enc = tokenizer(texts, truncation=True, max_length=max_length)
    return np.minimum([len(ids) for ids in enc["input_ids"]], max_length)


def first_fit_rows(lengths: np.ndarray, row: int) -> list[list[int]]:
    """Examples packed into rows of ``row`` tokens, longest first (first-fit decreasing)."""
    rows: list[list[int]] = []
    room: list[int] = []
    for length in sorted(lengths.tolist(), reverse=True):
        for i, free in enumerate(room):
            if free >= length:
                rows[i].append(length)
                room[i] -= length
                break
        else:
            rows.append([length])
            room.append(row - length)
    return rows


def padding_part(tokenizer) -> dict:
    results = {}
    for name, (texts, max_length) in read_texts(data_root()).items():
        lengths = token_lengths(tokenizer, texts, max_length)
        real = int(lengths.sum())
        batches = length_grouped_batches(lengths, BATCH, seed=42)
        grouped = sum(len(b) * int(lengths[b].max()) for b in batches)
        grouped_attention = sum(len(b) * int(lengths[b].max()) ** 2 for b in batches)
        entry = {
            "examples": len(lengths),
            "mean_tokens": round(real / len(lengths), 1),
            "grouped_padding_share": round(1 - real / grouped, 4),
            "real_attention_share": round(float((lengths**2).sum()) / grouped_attention, 4),
            "packed": {},
        }
        for row in (128, 256, 512):
            if row < max_length:
                continue
            rows = first_fit_rows(lengths, row)
            computed = len(rows) * row
            entry["packed"][row] = {
                "rows": len(rows),
                "padding_share": round(1 - real / computed, 4),
                # a block-diagonal mask still computes row x row scores per row
                "attention_vs_grouped": round(len(rows) * row**2 / grouped_attention, 2),
            }
        results[name] = entry
        print(f"[padding] {name}: {json.dumps(entry)}", flush=True)
    return results


# ---- step: autocast against bf16 weights, compile, threads -------------------------------------


def load_model():
    from transformers import BertForSequenceClassification

    folder = default_encoder().path
    model = BertForSequenceClassification.from_pretrained(folder, num_labels=2)
    use_fast_dropout(model)
    return model.train()


def make_batch(vocab: int, length: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, vocab, (BATCH, length), generator=g)
    lengths = torch.randint(max(2, length * 3 // 4), length + 1, (BATCH,), generator=g)
    mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
    return {
        "input_ids": ids * mask,
        "token_type_ids": torch.zeros_like(ids),
        "attention_mask": mask,
        "labels": torch.randint(0, 2, (BATCH,), generator=g),
    }


def autocast_step(model, forward=None) -> Callable[[dict], None]:
    """bertfit's step today: fp32 weights, bf16 autocast, fused AdamW, foreach clipping."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    forward = forward or (lambda b: lean_logits(model, **_inputs(b)))

    def step(batch: dict) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = forward(batch)
        F.cross_entropy(logits.float(), batch["labels"]).backward()
        torch.nn.utils.clip_grad_norm_(list(model.parameters()), 1.0, foreach=True)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def master_weights_step(model) -> Callable[[dict], None]:
    """bf16 weights in the model (no casts in the step), fp32 master copies in the optimizer."""
    params = [p for p in model.parameters() if p.requires_grad]
    masters = [p.detach().clone().float().requires_grad_() for p in params]
    model.to(torch.bfloat16)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(masters, lr=1e-5, fused=True)

    def step(batch: dict) -> None:
        logits = lean_logits(model, **_inputs(batch))
        F.cross_entropy(logits.float(), batch["labels"]).backward()
        grads = [p.grad for p in params]
        for master, grad in zip(masters, grads, strict=True):
            master.grad = grad.float()
        torch.nn.utils.clip_grad_norm_(masters, 1.0, foreach=True)
        optimizer.step()
        with torch.no_grad():
            torch._foreach_copy_(params, masters)  # the bf16 weights follow the fp32 masters
        for p in params:
            p.grad = None
        optimizer.zero_grad(set_to_none=True)

    return step


def _inputs(batch: dict) -> dict:
    return {k: batch[k] for k in ("input_ids", "token_type_ids", "attention_mask")}


def step_part(steps: int, compile_too: bool) -> dict:
    results: dict = {}
    threads = torch.get_num_threads()
    for name, length in STEP_SHAPES.items():
        model = load_model()
        batch = make_batch(model.config.vocab_size, length)
        row = {"length": length}
        step = autocast_step(model)
        row["autocast_s"] = median_seconds(lambda: step(batch), steps)
        torch.set_num_threads(1)
        row["autocast_1thread_s"] = median_seconds(lambda: step(batch), steps)
        torch.set_num_threads(threads)
        if compile_too:
            row.update(_compiled(model, batch, steps))
        step = master_weights_step(model)
        row["master_bf16_s"] = median_seconds(lambda: step(batch), steps)
        results[name] = row
        print(f"[step] {name}: {json.dumps(row)}", flush=True)
    return results


def _compiled(model, batch: dict, steps: int) -> dict:
    """torch.compile of the forward (dynamic shapes): first-call time, then steady steps at
    this length and at a second length (a recompile would show there)."""
    compiled = torch.compile(lambda **b: lean_logits(model, **b), dynamic=True)
    step = autocast_step(model, forward=lambda b: compiled(**_inputs(b)))
    start = time.perf_counter()
    step(batch)
    first = time.perf_counter() - start
    other = make_batch(model.config.vocab_size, batch["input_ids"].shape[1] + 8, seed=1)
    start = time.perf_counter()
    step(other)
    second_shape = time.perf_counter() - start
    return {
        "compile_first_step_s": round(first, 2),
        "compile_new_length_first_step_s": round(second_shape, 2),
        "compiled_s": median_seconds(lambda: step(batch), steps),
    }


def interleaved_part(rounds: int = 6) -> dict:
    """Autocast against bf16 weights with fp32 masters on two copies of one model, alternating
    blocks of 3 steps so that drift on a shared machine hits both alike (median ms)."""
    base, results = load_model(), {}
    for length in (24, 48, 128):
        a, b = copy.deepcopy(base), copy.deepcopy(base)
        batch = make_batch(base.config.vocab_size, length)
        steps = {"autocast_ms": autocast_step(a), "bf16_fp32_masters_ms": master_weights_step(b)}
        times: dict[str, list[float]] = {name: [] for name in steps}
        for step in steps.values():
            for _ in range(3):
                step(batch)
        for _ in range(rounds):
            for name, step in steps.items():
                for _ in range(3):
                    start = time.perf_counter()
                    step(batch)
                    times[name].append(time.perf_counter() - start)
        results[str(length)] = {k: round(1000 * statistics.median(v)) for k, v in times.items()}
        print(f"[interleaved] {length}: {json.dumps(results[str(length)])}", flush=True)
    return results


def compile_cache_part() -> dict:
    """The compiled short step's first-step time in a new process with an empty inductor cache,
    then in another new process with that cache filled (what a second run would pay)."""
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
        runs = [
            json.loads(
                subprocess.run(
                    [sys.executable, __file__, "--_compile-once"],
                    env=env,
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout.splitlines()[-1]
            )
            for _ in range(2)
        ]
    result = {"cold": runs[0], "warm_cache": runs[1]}
    print(f"[compile-cache] {json.dumps(result)}", flush=True)
    return result


def compile_once() -> None:
    model = load_model()
    batch = make_batch(model.config.vocab_size, 24)
    compiled = torch.compile(lambda **b: lean_logits(model, **b), dynamic=True)
    step = autocast_step(model, forward=lambda b: compiled(**_inputs(b)))
    start = time.perf_counter()
    step(batch)
    first = time.perf_counter() - start
    other = {k: v[:20] for k, v in make_batch(model.config.vocab_size, 17, seed=3).items()}
    start = time.perf_counter()
    step(other)  # another batch size and length: no recompile with dynamic shapes
    print(
        json.dumps(
            {"first_step_s": round(first, 1), "new_shape_s": round(time.perf_counter() - start, 2)}
        )
    )


# ---- attention at 256-512 tokens ------------------------------------------------------------------


def attention_part(repeats: int) -> dict:
    results = {}
    heads, dim, batch = 12, 32, 8
    for length in (256, 512):
        g = torch.Generator().manual_seed(0)
        shape = (batch, heads, length, dim)
        q, k, v = (torch.randn(shape, generator=g, dtype=torch.bfloat16) for _ in range(3))
        mask = torch.ones(batch, 1, 1, length, dtype=torch.bool)
        mask[: batch // 2, ..., length * 3 // 4 :] = False
        variants = {
            "sdpa_no_dropout": lambda q, k, v: F.scaled_dot_product_attention(q, k, v, mask),
            "sdpa_dropout": lambda q, k, v: F.scaled_dot_product_attention(
                q, k, v, mask, dropout_p=0.1
            ),
            "spelled_out_dropout": lambda q, k, v: _spelled_out(q, k, v, mask, 0.1),
            "query_chunks_128_dropout": lambda q, k, v: torch.cat(
                [_spelled_out(qc, k, v, mask, 0.1) for qc in q.split(128, dim=2)], dim=2
            ),
        }
        row = {}
        for name, fn in variants.items():
            leaves = [t.clone().requires_grad_() for t in (q, k, v)]

            def run(fn=fn, leaves=leaves) -> None:
                fn(*leaves).float().sum().backward()

            row[name + "_ms"] = round(1000 * median_seconds(run, repeats), 2)
        results[f"batch {batch} x {length}"] = row
        print(f"[attention] {length}: {json.dumps(row)}", flush=True)
    return results


def _spelled_out(q, k, v, mask, p: float) -> torch.Tensor:
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2)
    scores = scores.masked_fill(~mask, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    # bertfit's dropout on the probabilities (FastDropout's mask), output rescaled
    return (probs.masked_fill(FastDropout(p).drop_mask(probs), 0) @ v) * (1 / (1 - p))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--parts",
        default="padding,step,interleaved,compile-cache,attention",
        help="comma-separated parts",
    )
    p.add_argument("--steps", type=int, default=15, help="timed steps per variant")
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    p.add_argument("--json-out", type=Path, default=None)
    p.add_argument("--_compile-once", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._compile_once:
        return compile_once()
    parts = set(args.parts.split(","))
    result = {
        "date": dt.date.today().isoformat(),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    if "padding" in parts:
        from transformers import AutoTokenizer

        result["padding"] = padding_part(AutoTokenizer.from_pretrained(default_encoder().path))
    if "step" in parts:
        result["step"] = step_part(args.steps, not args.no_compile)
    if "interleaved" in parts:
        result["master_weights_interleaved"] = interleaved_part()
    if "compile-cache" in parts:
        result["compile_cache"] = compile_cache_part()
    if "attention" in parts:
        result["attention"] = attention_part(max(5, args.steps))
    out = args.json_out or REPO_ROOT / "benchmarks" / "results" / f"levers-{result['date']}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
