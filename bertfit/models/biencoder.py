"""The SBERT-style bi-encoder: one shared encoder, pooled sentence vectors, three objectives.

- ``cosine``: mean squared error between cos(u, v) and the gold score scaled to [0, 1];
- ``contrastive``: in-batch negatives (MultipleNegativesRanking): each text must pick its own
  positive among the batch's positives; rows whose positive (or text) repeats another row's are
  not used as negatives; with several processes every rank's positives are gathered (with
  gradients), so each text meets the whole global batch's negatives, as on one process;
- ``softmax``: SBERT's NLI objective, a classifier over (u, v, |u - v|); saved beside the
  encoder (for resuming) but not part of the embedder.

The run directory is a Hugging Face encoder plus sentence-transformers' files, so
``SentenceTransformer(run_dir)`` and ``bertfit embed run_dir`` both load it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from bertfit.data.packing import Packed, collate, sorted_batches
from bertfit.evaluation.metrics import (
    bootstrap_intervals,
    classification_metrics,
    pearson,
    spearman,
)
from bertfit.files import publish_tree, temporary_dir
from bertfit.models.fastbert import lean_hidden, supports_lean_encoder
from bertfit.models.pooling import Pooling, pool, write_sentence_transformers_files
from bertfit.rundir import NLI_HEAD
from bertfit.runtime import autocast
from bertfit.training.distributed import ONE_PROCESS, World, gather_rows
from bertfit.training.gather import gather_with_grad

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

    from bertfit.runtime import quiet_transformers

    torch.manual_seed(seed)
    with quiet_transformers():
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
    return contrastive_loss_of_rows(
        u, v, text_ids, positive_ids, 0, scale, u if symmetric else None
    )


def contrastive_loss_of_rows(
    u: torch.Tensor,
    v: torch.Tensor,
    text_ids: torch.Tensor,
    positive_ids: torch.Tensor,
    start: int,
    scale: float = 20.0,
    all_u: torch.Tensor | None = None,
) -> torch.Tensor:
    """``contrastive_loss``'s terms of some rows only, averaged over them: the texts ``u`` are
    rows ``start:start + len(u)`` of a batch whose positives are all of ``v`` (``text_ids`` and
    ``positive_ids``: the whole batch's). With ``all_u`` (the whole batch's texts) the symmetric
    loss: these rows' positives also pick their own text among ``all_u``.

    Weighted by ``len(u) / len(v)`` and summed over a partition of the batch's rows, this is
    ``contrastive_loss`` of the whole batch. No rows give 0, still connected to ``v`` (and
    ``all_u``), so that a backward runs through them.
    """
    if not len(u):
        return 0 * (v.sum() if all_u is None else v.sum() + all_u.sum())
    rows = torch.arange(start, start + len(u), device=u.device)
    same = (positive_ids[rows, None] == positive_ids[None, :]) | (
        text_ids[rows, None] == text_ids[None, :]
    )
    duplicates = same & (rows[:, None] != torch.arange(len(v), device=v.device)[None, :])

    def picked(queries: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        scores = scale * F.normalize(queries, dim=-1) @ F.normalize(candidates, dim=-1).T
        return F.cross_entropy(scores.masked_fill(duplicates, float("-inf")), rows)

    loss = picked(u, v)
    if all_u is not None:
        loss = (loss + picked(v[rows], all_u)) / 2
    return loss


def gathered_contrastive_loss(
    world: World,
    u: torch.Tensor,
    v: torch.Tensor,
    text_ids: torch.Tensor,
    positive_ids: torch.Tensor,
    scale: float = 20.0,
    symmetric: bool = False,
) -> torch.Tensor:
    """``contrastive_loss`` across the training processes: this rank's rows (possibly none) are
    the anchors and every rank's positives (with ``symmetric``, texts too) the candidates; the
    mean over this rank's anchors.

    Each rank's loss weighted by its share of the global batch and summed over the ranks is
    ``contrastive_loss`` of the whole batch, and so are the summed gradients: the gather's
    backward sends each rank the gradients of every rank's loss. Every rank must call it and
    back-propagate its result (collectives, forward and backward).

    >>> loss = gathered_contrastive_loss(world, u, v, text_ids, positive_ids)  # doctest: +SKIP
    >>> (loss * len(u) / global_batch_size).backward()  # then sum the gradients over the ranks
    """
    width = v.shape[1]
    parts = gather_with_grad(world, torch.cat([u, v], dim=1) if symmetric else v)
    start = sum(len(part) for part in parts[: world.rank])
    gathered = torch.cat(parts)
    ids = torch.cat(gather_with_grad(world, torch.stack([text_ids, positive_ids], dim=1)))
    all_u = gathered[:, :width] if symmetric else None
    return contrastive_loss_of_rows(
        u, gathered[:, -width:], ids[:, 0], ids[:, 1], start, scale, all_u
    )


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


def nearest_positives(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """For each text ``u[i]``, the index of the positive ``v[j]`` it is closest to by cosine."""
    return (F.normalize(u, dim=-1) @ F.normalize(v, dim=-1).T).argmax(dim=1)


def pair_scores(objective: str, u: torch.Tensor, v: torch.Tensor, head=None) -> np.ndarray:
    """Per pair, what the objective's dev metric is computed from: cosine: cos(u, v);
    contrastive: 1.0 where the pair's own positive is the nearest of all the positives, else
    0.0; softmax: the NLI head's logits over (u, v, |u - v|)."""
    if objective == "cosine":
        return F.cosine_similarity(u, v).numpy()
    if objective == "contrastive":
        return (nearest_positives(u, v) == torch.arange(len(u))).float().numpy()
    with torch.inference_mode():
        logits = head(torch.cat([u, v, (u - v).abs()], dim=-1).to(head.weight.device))
    return logits.float().cpu().numpy()


def score_pairs(objective: str, y, scores: np.ndarray, labels) -> dict:
    """cosine: Spearman/Pearson against the gold scores ``y``; contrastive: recall@1;
    softmax: classification metrics against the label ids ``y``."""
    if objective == "cosine":
        return {"spearman": spearman(y, scores), "pearson": pearson(y, scores), "n": len(scores)}
    if objective == "contrastive":
        return {"recall_at_1": float(scores.mean()) if len(scores) else 0.0, "n": len(scores)}
    return classification_metrics(y, scores.argmax(-1), labels)


def score_pairs_with_intervals(objective: str, y, scores: np.ndarray, labels) -> dict:
    """``score_pairs`` plus ``ci``: 95% bootstrap intervals over the pairs (for contrastive the
    candidates stay every pair's positive; the queries are resampled)."""
    y = None if y is None else np.asarray(y)
    metrics = score_pairs(objective, y, scores, labels)
    metrics["ci"] = bootstrap_intervals(
        lambda i: score_pairs(objective, None if y is None else y[i], scores[i], labels),
        len(scores),
    )
    return metrics


def dev_metrics(
    model: BiEncoder, dev: dict, objective: str, labels, pad_id, device, dtype, world=ONE_PROCESS
) -> dict:
    """cosine: Spearman/Pearson; contrastive: recall@1 of each text's positive among dev
    positives; softmax: classification metrics of the NLI head. With several processes each
    embeds a shard of the dev pairs and all gather them: the metrics of one process."""
    u, v = (_embed_shared(model, dev[side], pad_id, device, dtype, world) for side in "ab")
    return score_pairs(objective, dev.get("y"), pair_scores(objective, u, v, model.head), labels)


def _embed_shared(model: BiEncoder, packed: Packed, pad_id: int, device, dtype, world: World):
    """``embed_packed`` with every ``world.size``-th text embedded by each rank, gathered."""
    if not world.distributed:
        return embed_packed(model, packed, pad_id, device, dtype)
    shard = np.arange(world.rank, len(packed), world.size)
    rows = embed_packed(model, packed.take(shard), pad_id, device, dtype).numpy()
    return torch.from_numpy(gather_rows(world, shard, rows, len(packed)))


def load_nli_head(folder: Path, width: int, num_labels: int) -> nn.Linear:
    """The softmax objective's classifier over (u, v, |u - v|), as saved beside the encoder."""
    from safetensors.torch import load_file

    head = nn.Linear(3 * width, num_labels)
    head.load_state_dict(load_file(folder / NLI_HEAD))
    return head.eval()


def bi_encoder_batch_loss(
    model: BiEncoder, train: dict, config, pad_id: int, device, dtype, world: World = ONE_PROCESS
):
    """The training loss of a batch of pairs: embed both sides, then the objective's loss.

    With several processes (``world``) the contrastive loss gathers every rank's positives, so
    every rank must call it for every pass, also with no rows (``Trainee.every_rank``); the
    other objectives are per pair, and no rows give a zero loss that reaches no weight.
    """
    width = model.bert.config.hidden_size

    def embed(indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        if not indices:  # like a model output: float32 (pooled), requiring grad in training
            grad = torch.is_grad_enabled()
            empty = torch.zeros(0, width, dtype=torch.float32, device=device, requires_grad=grad)
            return empty, empty
        sides = [
            {k: t.to(device) for k, t in collate(train[s], indices, pad_id).items()} for s in "ab"
        ]
        with autocast(device, dtype):
            return model(**sides[0]), model(**sides[1])

    def batch_loss(indices: list[int]) -> tuple[torch.Tensor, None]:
        u, v = embed(indices)
        contrastive = config.objective == "contrastive"
        ids = [torch.from_numpy(train[k][indices]).to(device) for k in ("a_ids", "b_ids")]
        if contrastive and world.distributed:  # negatives from the whole global batch
            loss = gathered_contrastive_loss(world, u, v, *ids, config.scale, config.symmetric)
            return loss, None
        if not indices:  # a rank's empty slice: a zero loss that reaches no weight
            return 0 * u.sum(), None
        y = torch.from_numpy(train["y"][indices]).to(device) if "y" in train else None
        if config.objective == "cosine":
            return cosine_loss(u, v, y), None
        if contrastive:
            return contrastive_loss(u, v, *ids, config.scale, config.symmetric), None
        return softmax_loss(model.head, u, v, y), None

    return batch_loss


def load_bi_encoder_weights(model: BiEncoder, checkpoint: Path) -> None:
    """Copy a checkpoint's encoder (and softmax head) into ``model``, exactly."""
    from safetensors.torch import load_file

    saved = load_bi_encoder(checkpoint, model.pooling, 0, 0)
    model.bert.load_state_dict(saved.bert.state_dict())
    if model.head is not None:
        model.head.load_state_dict(load_file(checkpoint / NLI_HEAD))


def save_bi_encoder(model: BiEncoder, tokenizer, directory: Path) -> None:
    """The encoder, its tokenizer and sentence-transformers' files (and the softmax objective's
    head, which the embedder ignores, so that a checkpoint can resume)."""
    import os
    import shutil

    from bertfit.runtime import quiet_transformers

    directory.mkdir(parents=True, exist_ok=True)
    staging = temporary_dir(directory, ".model-")
    try:
        with quiet_transformers():
            model.bert.save_pretrained(str(staging), safe_serialization=True)
            tokenizer.hf.save_pretrained(str(staging))
        write_sentence_transformers_files(staging, model.pooling, model.bert.config.hidden_size)
        if model.head is not None:  # not part of the sentence embedder, but a resume needs it
            save_file(
                {k: v.contiguous() for k, v in model.head.state_dict().items()}, staging / NLI_HEAD
            )
        publish_tree(staging)
        for item in sorted(staging.iterdir(), key=lambda p: p.suffix == ".safetensors"):
            target = directory / item.name
            if item.is_dir() and target.exists():
                shutil.rmtree(target)
            os.replace(item, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
