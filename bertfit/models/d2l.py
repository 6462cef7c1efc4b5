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
import pickle
import re
import shutil
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

from bertfit.errors import ConfigError, ModelError
from bertfit.files import save_file_atomic, write_json, write_text

# The book's vocabulary: d2l.Vocab puts "<unk>" at index 0, then the reserved tokens of the BERT
# pretraining data set ("<pad>", "<mask>", "<cls>", "<sep>"), then words by frequency.
D2L_SPECIAL = ("<unk>", "<pad>", "<mask>", "<cls>", "<sep>")
VOCAB_FILE = "vocab.json"
PARAMS_FILE = "pretrained.params"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "d2l_config.json"
MODEL_TYPE = "d2l_bert"
_MASK_VALUE = -1e6  # the book replaces masked scores by this value (not -inf)
_BLOCK_KEY = re.compile(r"^encoder\.blks\.(\d+)\.")


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
        return cls(_read_vocab(Path(directory) / VOCAB_FILE))


# --------------------------------------------------------------------------------------------
# Files


def _read_json(path: Path, label: str) -> Any:
    """Parsed JSON, or a ModelError naming the file."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{label}: file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{label}: cannot read ({exc})") from None


def _read_vocab(path: Path, label: str | None = None) -> list[str]:
    vocab = _read_json(path, label or str(path))
    label = label or str(path)
    if not isinstance(vocab, list) or not vocab or not all(isinstance(t, str) for t in vocab):
        raise ModelError(f"{label}: expected a non-empty JSON list of token strings")
    return vocab


def _find_in_folder(path: Path) -> Path | None:
    """The folder holding both files: ``path`` itself or its only sub-folder that has them."""
    if (path / VOCAB_FILE).is_file() and (path / PARAMS_FILE).is_file():
        return path
    found = [
        sub
        for sub in sorted(path.iterdir())
        if sub.is_dir() and (sub / VOCAB_FILE).is_file() and (sub / PARAMS_FILE).is_file()
    ]
    return found[0] if len(found) == 1 else None


def _zip_members(zf: zipfile.ZipFile, label: str) -> tuple[str, str] | None:
    """Names of (vocab.json, pretrained.params) at the top or one folder down, or None."""
    by_folder: dict[str, set[str]] = {}
    for name in zf.namelist():
        pure = PurePosixPath(name.replace("\\", "/"))
        if pure.is_absolute() or ".." in pure.parts or re.match(r"^[A-Za-z]:", name):
            raise ModelError(f"{label}: refusing unsafe zip member name {name!r}")
        if pure.name in (VOCAB_FILE, PARAMS_FILE) and len(pure.parts) <= 2:
            by_folder.setdefault(str(pure.parent), set()).add(name)
    complete = [
        folder
        for folder, names in by_folder.items()
        if len({PurePosixPath(n).name for n in names}) == 2
    ]
    if len(complete) != 1:
        return None
    names = sorted(by_folder[complete[0]], key=lambda n: PurePosixPath(n).name != VOCAB_FILE)
    return names[0], names[1]


def is_d2l_checkpoint(path: str | os.PathLike) -> bool:
    """True for a folder (or its single sub-folder) with vocab.json + pretrained.params, or a zip
    holding them at the top or one folder down. Never raises."""
    try:
        p = Path(path)
        if p.is_dir():
            return _find_in_folder(p) is not None
        if p.is_file() and zipfile.is_zipfile(p):
            with zipfile.ZipFile(p) as zf:
                return _zip_members(zf, str(p)) is not None
    except (OSError, zipfile.BadZipFile, ModelError):
        return False
    return False


def _torch_load(path: Path, label: str) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelError(f"{label}: file not found") from None
    except pickle.UnpicklingError as exc:
        if "weights only" in str(exc).lower():
            raise ModelError(
                f"{label}: cannot load PyTorch state dict: it holds Python objects, not just "
                "tensors; refusing to unpickle it"
            ) from None
        raise ModelError(
            f"{label}: cannot load PyTorch state dict ({_first_line(exc)}); the file is damaged"
        ) from None
    except Exception as exc:  # torch raises many kinds for a corrupt or truncated file
        raise ModelError(
            f"{label}: cannot load PyTorch state dict ({_first_line(exc)}); the file is damaged "
            "or truncated: download the checkpoint again"
        ) from None
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ModelError(f"{label}: expected a state dict (mapping of names to tensors)")
    state = dict(state)
    if state and all(k.startswith("module.") for k in state):  # saved from nn.DataParallel
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's message, without terminal colour codes."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__


def _infer_config(
    state: Mapping[str, torch.Tensor], num_heads: int | None, label: str
) -> D2LConfig:
    def shape(key: str, ndim: int) -> tuple[int, ...]:
        if key not in state:
            raise ModelError(f"{label}: missing tensor {key!r}; not a d2l BERTModel state dict")
        if state[key].dim() != ndim:
            raise ModelError(f"{label}: {key!r} has shape {tuple(state[key].shape)}")
        return tuple(state[key].shape)

    vocab_size, num_hiddens = shape("encoder.token_embedding.weight", 2)
    _, max_len, pos_hiddens = shape("encoder.pos_embedding", 3)
    ffn_num_hiddens, ffn_in = shape("encoder.blks.0.ffn.dense1.weight", 2)
    if pos_hiddens != num_hiddens or ffn_in != num_hiddens:
        raise ModelError(f"{label}: inconsistent hidden sizes in the state dict")
    layers = {int(m.group(1)) for k in state if (m := _BLOCK_KEY.match(k))}
    if layers != set(range(len(layers))):
        raise ModelError(f"{label}: encoder blocks are not numbered 0..n-1: {sorted(layers)}")
    if num_heads is None:
        # Heads leave no trace in the shapes. The book's checkpoints use 64-wide heads:
        # small 256/4, base 768/12.
        num_heads = max(1, num_hiddens // 64)
        while num_hiddens % num_heads:
            num_heads -= 1
    elif num_hiddens % num_heads:
        raise ConfigError(f"num_heads={num_heads} does not divide num_hiddens={num_hiddens}")
    return D2LConfig(
        vocab_size=vocab_size,
        num_hiddens=num_hiddens,
        ffn_num_hiddens=ffn_num_hiddens,
        num_heads=num_heads,
        num_layers=len(layers),
        max_len=max_len,
    )


def load_d2l_checkpoint(
    path: str | os.PathLike, num_heads: int | None = None
) -> tuple[D2LConfig, dict[str, torch.Tensor], list[str]]:
    """Read a book checkpoint (folder or zip): its config (from tensor shapes), state dict, vocab.

    ``num_heads`` cannot be read from the shapes; it defaults to ``num_hiddens // 64``.
    """
    p = Path(path)
    if p.is_dir():
        folder = _find_in_folder(p)
        if folder is None:
            missing = [n for n in (VOCAB_FILE, PARAMS_FILE) if not (p / n).is_file()]
            raise ModelError(f"{p}: not a d2l BERT checkpoint (no {' or '.join(missing)})")
        label = str(folder / PARAMS_FILE)
        vocab = _read_vocab(folder / VOCAB_FILE)
        state = _torch_load(folder / PARAMS_FILE, label)
    elif p.is_file():
        try:
            with zipfile.ZipFile(p) as zf:
                members = _zip_members(zf, str(p))
                if members is None:
                    raise ModelError(
                        f"{p}: zip holds no folder with both {VOCAB_FILE} and {PARAMS_FILE}"
                    )
                with tempfile.TemporaryDirectory(prefix="bertfit-d2l-") as tmp:
                    local = {}
                    for member, name in zip(members, (VOCAB_FILE, PARAMS_FILE), strict=True):
                        local[name] = Path(tmp) / name  # our own name: nothing escapes tmp
                        with zf.open(member) as src, open(local[name], "wb") as dst:
                            shutil.copyfileobj(src, dst, 1 << 20)
                    label = f"{p}:{members[1]}"
                    vocab = _read_vocab(local[VOCAB_FILE], f"{p}:{members[0]}")
                    state = _torch_load(local[PARAMS_FILE], label)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError) as exc:
            raise ModelError(f"{p}: cannot read zip ({exc})") from None
    else:
        raise ModelError(f"{p}: no such file or directory")
    config = _infer_config(state, num_heads, label)
    if len(vocab) != config.vocab_size:
        raise ModelError(
            f"{label}: vocab.json has {len(vocab)} tokens but the token embedding has "
            f"{config.vocab_size} rows"
        )
    return config, state, vocab


def save_d2l_model(
    model: D2LBertForSequenceClassification, tokenizer: D2LTokenizer, directory: str | os.PathLike
) -> None:
    """Write ``model.safetensors``, ``d2l_config.json`` and ``vocab.json``, each atomically."""
    from safetensors.torch import save_file

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {"format": "pt", "model_type": MODEL_TYPE}
    save_file_atomic(lambda tmp: save_file(tensors, tmp, metadata=metadata), out / WEIGHTS_FILE)
    config = {"model_type": MODEL_TYPE, **model.config.to_dict(), "num_labels": model.num_labels}
    write_json(out / CONFIG_FILE, config)
    tokenizer.save(out)


def load_d2l_model(
    directory: str | os.PathLike,
) -> tuple[D2LBertForSequenceClassification, D2LTokenizer]:
    """Inverse of :func:`save_d2l_model`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(directory)
    config_path = folder / CONFIG_FILE
    raw = _read_json(config_path, str(config_path))
    if not isinstance(raw, dict) or not isinstance(raw.get("num_labels"), int):
        raise ModelError(f"{config_path}: expected an object with an integer num_labels")
    try:
        config = D2LConfig.from_dict(raw)
    except ConfigError as exc:
        raise ModelError(f"{config_path}: {exc}") from None
    tokenizer = D2LTokenizer.load(folder)
    if len(tokenizer) != config.vocab_size:
        raise ModelError(
            f"{folder / VOCAB_FILE}: {len(tokenizer)} tokens but config vocab_size is "
            f"{config.vocab_size}"
        )
    weights_path = folder / WEIGHTS_FILE
    try:
        state = load_file(str(weights_path))
    except FileNotFoundError:
        raise ModelError(f"{weights_path}: file not found") from None
    except (OSError, SafetensorError) as exc:
        raise ModelError(f"{weights_path}: cannot read ({exc})") from None
    model = D2LBertForSequenceClassification(config, raw["num_labels"])
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])
        raise ModelError(f"{weights_path}: does not fit d2l_config.json ({detail})") from None
    return model, tokenizer
