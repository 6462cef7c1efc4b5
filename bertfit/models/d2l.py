"""The BERT encoder of the book "Dive into Deep Learning" (d2l.ai, PyTorch edition).

The book publishes two pretrained checkpoints, ``bert.small.torch.zip`` and ``bert.base.torch.zip``.
Each zip holds one folder with ``vocab.json`` (a JSON list of tokens; the index is the id) and
``pretrained.params`` (``torch.save(model.state_dict())`` of the book's ``d2l.BERTModel``).

This module re-implements that model with the same parameter names, so the book's state dict loads
directly::

    encoder.token_embedding.weight          (vocab_size, H)
    encoder.segment_embedding.weight        (2, H)
    encoder.pos_embedding                   (1, max_len, H)   a bare nn.Parameter
    encoder.blks.{i}.attention.W_q/W_k/W_v/W_o.{weight,bias}  (H, H), (H,)  biases on
    encoder.blks.{i}.addnorm1.ln.{weight,bias}
    encoder.blks.{i}.ffn.dense1.{weight,bias}  (F, H), (F,)
    encoder.blks.{i}.ffn.dense2.{weight,bias}  (H, F), (H,)
    encoder.blks.{i}.addnorm2.ln.{weight,bias}
    hidden.0.{weight,bias}                  Linear(H, H) followed by Tanh, applied to <cls>
    mlm.mlp.{0,2,3}.*, nsp.output.*         pretraining heads, ignored here

Architecture, as in the book: the sum of token, segment and learned position embeddings goes into
the blocks with no LayerNorm and no dropout; each block is post-norm,
``Y = LN(X + dropout(MHA(X)))`` then ``LN(Y + dropout(FFN(Y)))`` with a ReLU FFN; attention scores
are ``q.k / sqrt(d_head)`` and the keys at positions ``>= valid_len`` are replaced by -1e6 before the
softmax; dropout is applied to the attention weights.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

from bertfit.errors import ConfigError, ModelError
from bertfit.files import write_text

# The book's vocabulary: d2l.Vocab puts "<unk>" at index 0, then the reserved tokens of the BERT
# pretraining data set ("<pad>", "<mask>", "<cls>", "<sep>"), then words by frequency.
D2L_SPECIAL = ("<unk>", "<pad>", "<mask>", "<cls>", "<sep>")
_MASK_VALUE = -1e6  # the book replaces masked scores by this value (not -inf)


@dataclass
class D2LConfig:
    """Sizes of a d2l BERT encoder (the book's constructor arguments)."""

    vocab_size: int
    num_hiddens: int
    ffn_num_hiddens: int
    num_heads: int
    num_layers: int
    max_len: int
    dropout: float = 0.1

    def __post_init__(self) -> None:
        for name in ("vocab_size", "num_hiddens", "ffn_num_hiddens", "num_heads", "num_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"d2l config: {name} must be a positive integer, got {value!r}")
        if not isinstance(self.max_len, int) or self.max_len < 1:
            raise ConfigError(
                f"d2l config: max_len must be a positive integer, got {self.max_len!r}"
            )
        if self.num_hiddens % self.num_heads:
            raise ConfigError(
                f"d2l config: num_hiddens={self.num_hiddens} is not divisible by "
                f"num_heads={self.num_heads}"
            )
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ConfigError(f"d2l config: dropout must be in [0, 1), got {self.dropout!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of the fields."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> D2LConfig:
        """Build from a dict; keys that are not fields (e.g. ``num_labels``) are ignored."""
        names = {f.name for f in fields(cls)}
        missing = [f.name for f in fields(cls) if f.name != "dropout" and f.name not in d]
        if missing:
            raise ConfigError(f"d2l config: missing {', '.join(missing)}")
        return cls(**{k: v for k, v in d.items() if k in names})


# --------------------------------------------------------------------------------------------
# Model. Attribute names mirror the book's classes so that state-dict keys are identical.


class _MultiHeadAttention(nn.Module):
    """Self-attention with ``W_q, W_k, W_v, W_o`` (all with bias, as the book's BERT uses)."""

    def __init__(self, num_hiddens: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.W_q = nn.Linear(num_hiddens, num_hiddens, bias=True)
        self.W_k = nn.Linear(num_hiddens, num_hiddens, bias=True)
        self.W_v = nn.Linear(num_hiddens, num_hiddens, bias=True)
        self.W_o = nn.Linear(num_hiddens, num_hiddens, bias=True)
        self.dropout = nn.Dropout(dropout)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        batch, steps, _ = x.shape
        return x.reshape(batch, steps, self.num_heads, -1).transpose(1, 2)  # [B, h, T, d]

    def forward(
        self, x: torch.Tensor, key_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``key_mask``: bool [B, T], True for keys that may be attended to (None: all)."""
        q, k, v = self._split(self.W_q(x)), self._split(self.W_k(x)), self._split(self.W_v(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # [B, h, T, T]
        if key_mask is not None:
            scores = scores.masked_fill(~key_mask[:, None, None, :], _MASK_VALUE)
        weights = torch.softmax(scores, dim=-1)
        out = self.dropout(weights) @ v  # [B, h, T, d]
        out = out.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1)
        return self.W_o(out), weights


class _AddNorm(nn.Module):
    """Residual connection then LayerNorm: ``ln(dropout(y) + x)``."""

    def __init__(self, num_hiddens: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.ln = nn.LayerNorm(num_hiddens)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.ln(self.dropout(y) + x)


class _PositionWiseFFN(nn.Module):
    """``dense2(relu(dense1(x)))``."""

    def __init__(self, num_hiddens: int, ffn_num_hiddens: int) -> None:
        super().__init__()
        self.dense1 = nn.Linear(num_hiddens, ffn_num_hiddens)
        self.relu = nn.ReLU()
        self.dense2 = nn.Linear(ffn_num_hiddens, num_hiddens)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense2(self.relu(self.dense1(x)))


class _EncoderBlock(nn.Module):
    """Post-norm Transformer encoder block (the book's EncoderBlock/TransformerEncoderBlock)."""

    def __init__(self, config: D2LConfig) -> None:
        super().__init__()
        h = config.num_hiddens
        self.attention = _MultiHeadAttention(h, config.num_heads, config.dropout)
        self.addnorm1 = _AddNorm(h, config.dropout)
        self.ffn = _PositionWiseFFN(h, config.ffn_num_hiddens)
        self.addnorm2 = _AddNorm(h, config.dropout)

    def forward(
        self, x: torch.Tensor, key_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        attended, weights = self.attention(x, key_mask)
        y = self.addnorm1(x, attended)
        return self.addnorm2(y, self.ffn(y)), weights


class D2LBertEncoder(nn.Module):
    """The book's ``BERTEncoder``: token + segment + learned position embeddings, then blocks."""

    def __init__(self, config: D2LConfig) -> None:
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.num_hiddens)
        self.segment_embedding = nn.Embedding(2, config.num_hiddens)
        self.blks = nn.ModuleList(_EncoderBlock(config) for _ in range(config.num_layers))
        self.pos_embedding = nn.Parameter(torch.randn(1, config.max_len, config.num_hiddens))

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor,
        valid_lens: torch.Tensor | None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """Encode ``[B, T]`` ids; keys at positions ``>= valid_lens[b]`` are masked.

        Returns the hidden states ``[B, T, H]`` and, if asked, one ``[B, heads, T, T]`` tensor of
        attention weights per block (before attention dropout).
        """
        steps = input_ids.shape[1]
        if steps > self.config.max_len:
            raise ModelError(
                f"d2l encoder: sequence length {steps} exceeds max_len={self.config.max_len}"
            )
        x = self.token_embedding(input_ids) + self.segment_embedding(token_type_ids)
        x = x + self.pos_embedding[:, :steps, :]
        key_mask = None
        if valid_lens is not None:
            positions = torch.arange(steps, device=input_ids.device)
            key_mask = positions[None, :] < valid_lens.to(input_ids.device)[:, None]
        attentions = []
        for blk in self.blks:
            x, weights = blk(x, key_mask)
            if output_attentions:
                attentions.append(weights)
        return x, (tuple(attentions) if output_attentions else None)


class D2LBertForSequenceClassification(nn.Module):
    """Encoder + the book's pretrained ``hidden`` (Linear+Tanh on ``<cls>``) + a new ``output``.

    Like the book's ``BERTClassifier`` there is no dropout between ``hidden`` and ``output``.
    """

    def __init__(self, config: D2LConfig, num_labels: int) -> None:
        super().__init__()
        if num_labels < 1:
            raise ConfigError(f"d2l model: num_labels must be >= 1, got {num_labels}")
        self.config = config
        self.num_labels = num_labels
        self.encoder = D2LBertEncoder(config)
        self.hidden = nn.Sequential(nn.Linear(config.num_hiddens, config.num_hiddens), nn.Tanh())
        self.output = nn.Linear(config.num_hiddens, num_labels)
        nn.init.normal_(self.output.weight, mean=0.0, std=0.02)
        nn.init.zeros_(self.output.bias)

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
        **unused: Any,
    ) -> SequenceClassifierOutput:
        """``attention_mask`` is a right-padded 0/1 mask ``[B, T]``; its row sums are valid_lens."""
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        valid_lens = None if attention_mask is None else attention_mask.sum(dim=-1)
        encoded, attentions = self.encoder(input_ids, token_type_ids, valid_lens, output_attentions)
        logits = self.output(self.hidden(encoded[:, 0, :]))
        return SequenceClassifierOutput(logits=logits, attentions=attentions)

    def load_pretrained(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Load ``encoder.*`` and ``hidden.*`` from a book state dict; ``mlm.*``/``nsp.*`` ignored."""
        own = {k: v for k, v in self.state_dict().items() if k.startswith(("encoder.", "hidden."))}
        given = {k: v for k, v in state_dict.items() if not k.startswith(("mlm.", "nsp."))}
        missing = sorted(set(own) - set(given))
        unexpected = sorted(set(given) - set(own))
        mismatched = sorted(
            f"{k} {tuple(given[k].shape)} vs {tuple(own[k].shape)}"
            for k in set(own) & set(given)
            if tuple(given[k].shape) != tuple(own[k].shape)
        )
        problems = []
        if missing:
            problems.append("missing: " + ", ".join(missing))
        if unexpected:
            problems.append("unexpected: " + ", ".join(unexpected))
        if mismatched:
            problems.append("shape mismatch (checkpoint vs model): " + ", ".join(mismatched))
        if problems:
            raise ModelError("d2l checkpoint does not fit the model; " + "; ".join(problems))
        with torch.no_grad():
            for key, target in own.items():
                target.copy_(given[key])


# --------------------------------------------------------------------------------------------
# Tokenizer


class D2LTokenizer:
    """Word-level tokenizer of the book: lower-case, split on whitespace, unknown -> ``<unk>``.

    No punctuation splitting: the book's data (WikiText-2, SNLI parses) is already tokenised with
    spaces around punctuation, so a word with punctuation attached maps to ``<unk>`` here as it
    does in the book.
    """

    def __init__(self, vocab: list[str]) -> None:
        if not isinstance(vocab, list) or not vocab or not all(isinstance(t, str) for t in vocab):
            raise ModelError("d2l vocab must be a non-empty JSON list of strings")
        self.vocab = list(vocab)
        self.token_to_id: dict[str, int] = {}
        for idx, token in enumerate(self.vocab):
            self.token_to_id.setdefault(token, idx)
        lacking = [t for t in ("<unk>", "<pad>", "<cls>", "<sep>") if t not in self.token_to_id]
        if lacking:
            raise ModelError(f"d2l vocab lacks the special token(s) {', '.join(lacking)}")
        self.unk_token_id = self.token_to_id["<unk>"]
        self.pad_token_id = self.token_to_id["<pad>"]
        self.cls_token_id = self.token_to_id["<cls>"]
        self.sep_token_id = self.token_to_id["<sep>"]
        self.mask_token_id: int | None = self.token_to_id.get("<mask>")
        self.max_positions: int | None = None  # set from the checkpoint's max_len by its loader
        self.limit_source = ""
        # a special token typed inside a text is an unknown word: only packing places them
        self._word_ids = dict(self.token_to_id)
        for token in D2L_SPECIAL:
            if token != "<unk>":
                self._word_ids.pop(token, None)

    def __len__(self) -> int:
        return len(self.vocab)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def tokenize(self, text: str) -> list[str]:
        """Lower-case and split on whitespace."""
        return text.lower().split()

    def encode(self, text: str) -> list[int]:
        """Ids of one text, without special tokens."""
        unk, ids = self.unk_token_id, self._word_ids
        return [ids.get(token, unk) for token in self.tokenize(text)]

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Ids of each text, without special tokens."""
        return [self.encode(text) for text in texts]

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
        return [self.vocab[i] for i in ids]

    def fingerprint(self) -> str:
        """sha256 of the tokenisation rule and vocabulary; stable across runs, for caching."""
        payload = json.dumps(["d2l-word-lower-v2", self.vocab], ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def save(self, directory: str | os.PathLike) -> None:
        """Write ``vocab.json`` (atomically) in ``directory``."""
        text = json.dumps(self.vocab, ensure_ascii=False)
        write_text(Path(directory) / VOCAB_FILE, text)

    @classmethod
    def load(cls, directory: str | os.PathLike) -> D2LTokenizer:
        return cls(read_vocab(Path(directory) / VOCAB_FILE))


VOCAB_FILE = "vocab.json"


def read_json(path: Path, label: str) -> Any:
    """Parsed JSON, or a ModelError naming the file."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{label}: file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{label}: cannot read ({exc})") from None


def read_vocab(path: Path, label: str | None = None) -> list[str]:
    vocab = read_json(path, label or str(path))
    label = label or str(path)
    if not isinstance(vocab, list) or not vocab or not all(isinstance(t, str) for t in vocab):
        raise ModelError(f"{label}: expected a non-empty JSON list of token strings")
    return vocab
