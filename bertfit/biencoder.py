"""The SBERT-style bi-encoder: one shared encoder, pooled sentence vectors, three objectives.

- ``cosine``: mean squared error between cos(u, v) and the gold score scaled to [0, 1];
- ``contrastive``: in-batch negatives (MultipleNegativesRanking): each text must pick its own
  positive among the batch's positives; rows whose positive (or text) repeats another row's are
  not used as negatives;
- ``softmax``: SBERT's NLI objective, a classifier over (u, v, |u - v|), dropped after training.

The run directory is a Hugging Face encoder plus sentence-transformers' files, so
``SentenceTransformer(run_dir)`` and ``bertfit embed run_dir`` both load it.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .embed import Pooling, pool, write_sentence_transformers_files
from .evaluation import classification_metrics, pearson, spearman
from .fastbert import lean_hidden, supports_lean_encoder
from .files import append_jsonl
from .packing import Packed, collate, length_grouped_batches, sorted_batches
from .runtime import autocast

log = logging.getLogger("bertfit")


class BiEncoder(nn.Module):
    """A Hugging Face encoder whose output is one pooled vector per text."""

    def __init__(self, encoder: nn.Module, pooling: Pooling, num_labels: int = 0) -> None:
        super().__init__()
        self.bert = encoder
        self.pooling = pooling
        width = encoder.config.hidden_size
        self.head = nn.Linear(3 * width, num_labels) if num_labels else None

    @property
    def base_model(self) -> nn.Module:  # what encoder_layers / freeze look for
        return self.bert

    def get_input_embeddings(self) -> nn.Module:
        return self.bert.get_input_embeddings()

    def forward(self, input_ids, token_type_ids, attention_mask) -> torch.Tensor:
        if self.training and supports_lean_encoder(self.bert):  # the fast path of fastbert.py
            hidden = lean_hidden(self.bert, input_ids, token_type_ids, attention_mask)
        else:
            hidden = self.bert(
                input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask
            ).last_hidden_state
        return pool(hidden.float(), attention_mask, self.pooling.mode)


def load_bi_encoder(path: Path, pooling: Pooling, num_labels: int, seed: int) -> BiEncoder:
    from transformers import AutoModel

    from .model import _quiet_transformers

    torch.manual_seed(seed)
    with _quiet_transformers():
        encoder = AutoModel.from_pretrained(str(path), dtype=torch.float32)
    pooler = getattr(encoder, "pooler", None)
    if pooler is not None:  # unused, but kept so the saved encoder loads without warnings
        pooler.requires_grad_(False)
    return BiEncoder(encoder, pooling, num_labels)


def cosine_loss(u: torch.Tensor, v: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(F.cosine_similarity(u, v), target)


def contrastive_loss(
    u: torch.Tensor,
    v: torch.Tensor,
    text_ids: torch.Tensor,
    positive_ids: torch.Tensor,
    scale: float = 20.0,
    symmetric: bool = False,
) -> torch.Tensor:
    """Cross-entropy of each text over the batch's positives (its own is the answer).

    A positive equal to the row's own positive (the same text id), or belonging to a row with
    the same text, is masked out: it is a duplicate, not a negative.
    """
    scores = scale * F.normalize(u, dim=-1) @ F.normalize(v, dim=-1).T
    same = (positive_ids[None, :] == positive_ids[:, None]) | (
        text_ids[None, :] == text_ids[:, None]
    )
    eye = torch.eye(len(u), dtype=torch.bool, device=u.device)
    scores = scores.masked_fill(same & ~eye, float("-inf"))
    targets = torch.arange(len(u), device=u.device)
    loss = F.cross_entropy(scores, targets)
    if symmetric:
        loss = (loss + F.cross_entropy(scores.T, targets)) / 2
    return loss


def softmax_loss(
    head: nn.Linear, u: torch.Tensor, v: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    return F.cross_entropy(head(torch.cat([u, v, (u - v).abs()], dim=-1)), y)


def scale_scores(scores: np.ndarray, low: float, high: float) -> np.ndarray:
    """Gold scores mapped to [0, 1] for the cosine objective."""
    return ((scores - low) / max(high - low, 1e-12)).astype(np.float32)


@torch.inference_mode()
def embed_packed(
    model: BiEncoder, packed: Packed, pad_id: int, device, dtype, batch_size: int = 128
) -> torch.Tensor:
    """Pooled vectors for packed texts, in input order (float32, on the CPU)."""
    was_training = model.training
    model.eval()
    out = torch.empty(len(packed), model.bert.config.hidden_size)
    for indices in sorted_batches(packed.lengths, batch_size):
        batch = {k: v.to(device) for k, v in collate(packed, indices, pad_id).items()}
        with autocast(device, dtype):
            out[torch.from_numpy(indices)] = model(**batch).float().cpu()
    model.train(was_training)
    return out


def dev_metrics(model: BiEncoder, dev: dict, objective: str, labels, pad_id, device, dtype) -> dict:
    """cosine: Spearman/Pearson; contrastive: recall@1 of each text's positive among dev
    positives; softmax: classification metrics of the NLI head."""
    u = embed_packed(model, dev["a"], pad_id, device, dtype)
    v = embed_packed(model, dev["b"], pad_id, device, dtype)
    if objective == "cosine":
        cos = F.cosine_similarity(u, v).numpy()
        return {
            "spearman": spearman(dev["y"], cos),
            "pearson": pearson(dev["y"], cos),
            "n": len(cos),
        }
    if objective == "contrastive":
        scores = F.normalize(u, dim=-1) @ F.normalize(v, dim=-1).T
        hits = (scores.argmax(dim=1) == torch.arange(len(u))).float().mean().item()
        return {"recall_at_1": hits, "n": len(u)}
    with torch.inference_mode():
        logits = model.head(torch.cat([u, v, (u - v).abs()], dim=-1).to(model.head.weight.device))
    return classification_metrics(dev["y"], logits.argmax(-1).cpu().numpy(), labels)


def fit_bi_encoder(
    model: BiEncoder,
    train: dict,
    dev: dict,
    objective: str,
    labels: list[str],
    config,
    optimizer,
    scheduler,
    device,
    dtype,
    pad_id: int,
    output: Path,
    save_best,
) -> dict:
    """The loop for pairs: embed both sides, the objective's loss, step; evaluate each epoch."""
    from .training import optimizer_step

    metric = {"cosine": "spearman", "contrastive": "recall_at_1", "softmax": "accuracy"}[objective]
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    lengths = np.maximum(train["a"].lengths, train["b"].lengths)
    best, best_epoch, step, seen_total, seconds = -math.inf, 0, 0, 0, 0.0
    best_dev: dict = {}
    model.train()
    for epoch in range(1, config.epochs + 1):
        batches = length_grouped_batches(
            lengths, config.batch_size, config.seed + epoch, config.length_groups
        )
        bar = tqdm(
            total=len(lengths),
            desc=f"epoch {epoch}/{config.epochs}",
            unit="pair",
            disable=not config.progress,
            file=sys.stderr,
            leave=False,
        )
        loss_sum, seen, started = 0.0, 0, time.perf_counter()
        for i, indices in enumerate(batches):
            sides = [
                {k: t.to(device) for k, t in collate(train[s], indices, pad_id).items()}
                for s in "ab"
            ]
            with autocast(device, dtype):
                u, v = model(**sides[0]), model(**sides[1])
            y = torch.from_numpy(train["y"][indices]).to(device) if "y" in train else None
            if objective == "cosine":
                loss = cosine_loss(u, v, y)
            elif objective == "contrastive":
                ids = [torch.from_numpy(train[k][indices]).to(device) for k in ("a_ids", "b_ids")]
                loss = contrastive_loss(u, v, *ids, config.scale, config.symmetric)
            else:
                loss = softmax_loss(model.head, u, v, y)
            scaler.scale(loss / config.grad_accum).backward()
            if (i + 1) % config.grad_accum == 0 or i + 1 == len(batches):
                optimizer_step(model, optimizer, scaler, config.max_grad_norm)
                scheduler.step()
                step += 1
            loss_sum += loss.item() * len(indices)
            seen += len(indices)
            bar.update(len(indices))
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", refresh=False)
        bar.close()
        elapsed = time.perf_counter() - started
        seconds, seen_total = seconds + elapsed, seen_total + seen
        metrics = dev_metrics(model, dev, objective, labels, pad_id, device, dtype)
        headline = {k: v for k, v in metrics.items() if isinstance(v, float)}
        append_jsonl(
            output / "metrics.jsonl",
            {
                "epoch": epoch,
                "step": step,
                "train_loss": loss_sum / seen,
                "examples_per_second": seen / elapsed,
                "dev": headline,
                "time": round(time.time(), 3),
            },
        )
        if metrics[metric] > best:
            best, best_epoch, best_dev = metrics[metric], epoch, metrics
            save_best()
        log.info(
            f"epoch {epoch}/{config.epochs}: loss {loss_sum / seen:.4f}, dev {metric} "
            f"{metrics[metric]:.4f}, {seen / elapsed:.1f} pairs/s"
        )
    return {
        "metric": metric,
        "best_epoch": best_epoch,
        "steps": step,
        "dev": best_dev,
        "train_seconds": round(seconds, 3),
        "train_examples_per_second": round(seen_total / seconds, 2) if seconds else None,
    }


def save_bi_encoder(model: BiEncoder, tokenizer, directory: Path) -> None:
    """The encoder, its tokenizer and sentence-transformers' files; the softmax head is dropped."""
    import os
    import shutil
    import tempfile

    from .model import _quiet_transformers

    directory.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".model-", dir=directory))
    try:
        with _quiet_transformers():
            model.bert.save_pretrained(str(staging), safe_serialization=True)
            tokenizer.hf.save_pretrained(str(staging))
        write_sentence_transformers_files(staging, model.pooling, model.bert.config.hidden_size)
        for item in sorted(staging.iterdir(), key=lambda p: p.suffix == ".safetensors"):
            target = directory / item.name
            if item.is_dir() and target.exists():
                shutil.rmtree(target)
            os.replace(item, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
