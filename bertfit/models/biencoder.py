"""The SBERT-style bi-encoder: one shared encoder, pooled sentence vectors, three objectives.

- ``cosine``: mean squared error between cos(u, v) and the gold score scaled to [0, 1];
- ``contrastive``: in-batch negatives (MultipleNegativesRanking): each text must pick its own
  positive among the batch's positives; rows whose positive (or text) repeats another row's are
  not used as negatives;
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


def dev_metrics(model: BiEncoder, dev: dict, objective: str, labels, pad_id, device, dtype) -> dict:
    """cosine: Spearman/Pearson; contrastive: recall@1 of each text's positive among dev
    positives; softmax: classification metrics of the NLI head."""
    u = embed_packed(model, dev["a"], pad_id, device, dtype)
    v = embed_packed(model, dev["b"], pad_id, device, dtype)
    return score_pairs(objective, dev.get("y"), pair_scores(objective, u, v, model.head), labels)


def load_nli_head(folder: Path, width: int, num_labels: int) -> nn.Linear:
    """The softmax objective's classifier over (u, v, |u - v|), as saved beside the encoder."""
    from safetensors.torch import load_file

    head = nn.Linear(3 * width, num_labels)
    head.load_state_dict(load_file(folder / NLI_HEAD))
    return head.eval()


def bi_encoder_batch_loss(model: BiEncoder, train: dict, config, pad_id: int, device, dtype):
    """The training loss of a batch of pairs: embed both sides, then the objective's loss."""

    def batch_loss(indices: list[int]) -> tuple[torch.Tensor, None]:
        sides = [
            {k: t.to(device) for k, t in collate(train[s], indices, pad_id).items()} for s in "ab"
        ]
        with autocast(device, dtype):
            u, v = model(**sides[0]), model(**sides[1])
        y = torch.from_numpy(train["y"][indices]).to(device) if "y" in train else None
        if config.objective == "cosine":
            return cosine_loss(u, v, y), None
        if config.objective == "contrastive":
            ids = [torch.from_numpy(train[k][indices]).to(device) for k in ("a_ids", "b_ids")]
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
