"""What resumable checkpoints cost with the default encoder: size, save and load time, compared
with the training time they protect.

    python benchmarks/checkpoint_cost.py [--steps 20] [--batch-size 32]

It trains the default classifier for a few steps on the bundled SST-2 sample, then saves a
checkpoint three times and loads it back three times (median of each), and prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bertfit.config.train import TrainConfig
from bertfit.data.examples import Columns
from bertfit.data.labels import label_targets
from bertfit.data.packing import collate, pack_texts
from bertfit.data.readers import read_examples
from bertfit.models.adapters import freeze
from bertfit.models.classifier import (
    build_classifier,
    load_classifier,
    load_tokenizer,
    save_classifier,
)
from bertfit.models.encoders import resolve_encoder
from bertfit.runtime import autocast, available_cores, pick_precision
from bertfit.training.checkpoint import (
    list_checkpoints,
    load_training_state,
    restore_rng,
    save_checkpoint,
)
from bertfit.training.optim import linear_schedule, make_optimizer, optimizer_step
from bertfit.training.state import TrainState

SAMPLE = Path(__file__).resolve().parent.parent / "bertfit" / "samples" / "sst2_train.tsv.gz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(available_cores())  # a benchmark process: set once for all of it
    device = torch.device("cpu")
    dtype = pick_precision("auto", device)
    encoder = resolve_encoder("default")
    tokenizer = load_tokenizer(encoder)
    config = TrainConfig(train=str(SAMPLE), output="x").resolve(encoder, tokenizer.max_positions)
    examples = read_examples(SAMPLE, Columns("sentence", None, "label"))
    labels = sorted(set(examples.labels))
    packed = pack_texts(tokenizer, examples.texts, None, 128, "longest-first")
    targets = label_targets(examples.labels, labels, "single")
    model = build_classifier(encoder, labels)
    freeze(model, False, None, config.train_word_embeddings)
    optimizer = make_optimizer(model, config.lr, 0.01, device, config.layer_lr_decay)
    scheduler = linear_schedule(optimizer, 2, args.steps)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    model.train()
    started = time.perf_counter()
    order = [
        list(range(i, i + args.batch_size))
        for i in range(0, args.steps * args.batch_size, args.batch_size)
    ]
    for indices in order:
        batch = collate(packed, indices, tokenizer.pad_token_id, targets)
        y = batch.pop("labels")
        with autocast(device, dtype):
            loss = torch.nn.functional.cross_entropy(model(**batch).logits.float(), y)
        loss.backward()
        optimizer_step(model, optimizer, scaler, 1.0)
        scheduler.step()
    step_seconds = (time.perf_counter() - started) / args.steps
    write_model = lambda folder: save_classifier(model, tokenizer, folder)  # noqa: E731
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp)
        saves, loads = [], []
        for i in range(3):
            t = time.perf_counter()
            save_checkpoint(
                run,
                i + 1,
                write_model,
                optimizer,
                scheduler,
                scaler,
                TrainState(data="x").to_dict(),
                order,
            )
            saves.append(time.perf_counter() - t)
        checkpoint = list_checkpoints(run)[-1]
        size = sum(p.stat().st_size for p in checkpoint.path.rglob("*") if p.is_file())
        for _ in range(3):
            t = time.perf_counter()
            model.load_state_dict(load_classifier(checkpoint.path, encoder.kind)[0].state_dict())
            load_training_state(checkpoint.path, optimizer, scheduler, scaler)
            restore_rng(checkpoint.path)
            loads.append(time.perf_counter() - t)
    save, load = statistics.median(saves), statistics.median(loads)
    print(
        json.dumps(
            {
                "encoder": encoder.name,
                "checkpoint_mb": round(size / 2**20, 1),
                "save_seconds": round(save, 3),
                "load_seconds": round(load, 3),
                "train_step_seconds": round(step_seconds, 3),
                "save_in_steps": round(save / step_seconds, 2),
                "threads": torch.get_num_threads(),
            }
        )
    )


if __name__ == "__main__":
    main()
