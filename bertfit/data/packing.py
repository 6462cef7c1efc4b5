"""Turn texts into model inputs: tokenise once, truncate, pack ``[CLS] a [SEP] b [SEP]``, cache,
and batch by length so little compute goes to padding.

Packed inputs are stored flat (one int32 array plus offsets), like nanoGPT's ``train.bin``.
"""

from __future__ import annotations

import hashlib
import os
import threading
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from bertfit.errors import ConfigError
from bertfit.files import save_file_atomic

PACKING_VERSION = "2"  # 2: special-token strings inside a text are plain text
HEAD_SHARE = 128 / 510  # Sun et al. 2019: head 128 + tail 382 of a 512 budget


class Tokenizer(Protocol):
    """What packing needs from a tokenizer: ids without special tokens, and the special ids."""

    cls_token_id: int
    sep_token_id: int
    pad_token_id: int
    # the most tokens the model takes (its position embeddings), where known, and where it says so
    max_positions: int | None
    limit_source: str

    def encode_batch(self, texts: list[str]) -> list[list[int]]: ...

    def fingerprint(self) -> str: ...


class HFTokenizer:
    """A Hugging Face fast (Rust) tokenizer behind the packing interface."""

    def __init__(self, tokenizer) -> None:
        self.hf = tokenizer
        self.cls_token_id = tokenizer.cls_token_id
        self.sep_token_id = tokenizer.sep_token_id
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.max_positions: int | None = None
        self.limit_source = ""
        self._fingerprint: str | None = None
        # a call sets the Rust tokenizer's truncation and padding state: two threads at once
        # (a server's requests and its explanations) fail with "Already borrowed"
        self._lock = threading.Lock()

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        with self._lock:
            return self._encode(texts)

    def __getstate__(self) -> dict:  # a lock does not pickle: each copy gets its own
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _encode(self, texts: list[str]) -> list[list[int]]:
        encoded = self.hf(
            list(texts),
            add_special_tokens=False,
            # "[SEP]" or "[CLS]" typed inside a text is text, not a special token: packing alone
            # places special tokens, so a text cannot add a segment or a second [CLS]
            split_special_tokens=True,
            return_attention_mask=False,
            return_token_type_ids=False,
            verbose=False,
        )
        return encoded["input_ids"]

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
        return self.hf.convert_ids_to_tokens(ids)

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            backend = getattr(self.hf, "backend_tokenizer", None)
            state = (
                backend.to_str()
                if backend is not None
                else repr(sorted(self.hf.get_vocab().items()))
            )
            self._fingerprint = hashlib.sha256(state.encode()).hexdigest()[:16]
        return self._fingerprint


def truncate_pair(
    a: list[int], b: list[int] | None, max_length: int, strategy: str
) -> tuple[list[int], list[int] | None]:
    """Cut ``a`` (and ``b``) so that they fit ``max_length`` with their special tokens."""
    budget = max_length - (3 if b is not None else 2)
    if b is None:
        if len(a) <= budget:
            return a, None
        return (_head_tail(a, budget) if strategy == "head-tail" else a[:budget]), None
    if len(a) + len(b) <= budget:
        return a, b
    if strategy == "proportional":
        keep_a = round(budget * len(a) / (len(a) + len(b)))
        keep_b = budget - keep_a
    else:
        keep_a, keep_b = _longest_first_lengths(len(a), len(b), budget)
    if strategy == "head-tail":
        return _head_tail(a, keep_a), _head_tail(b, keep_b)
    return a[:keep_a], b[:keep_b]


def _longest_first_lengths(len_a: int, len_b: int, budget: int) -> tuple[int, int]:
    """Lengths after repeatedly dropping the last token of the longer text (``b`` on ties)."""
    excess = len_a + len_b - budget
    cut_a = min(excess, max(0, len_a - len_b))  # first shorten a down to b's length
    len_a -= cut_a
    excess -= cut_a
    cut_b = min(excess, max(0, len_b - len_a))
    len_b -= cut_b
    excess -= cut_b
    # now equal lengths: the loop alternates, b first
    len_b -= (excess + 1) // 2
    len_a -= excess // 2
    return len_a, len_b


def _head_tail(tokens: list[int], keep: int) -> list[int]:
    if len(tokens) <= keep:
        return tokens
    head = round(keep * HEAD_SHARE)
    tail = keep - head
    return tokens[:head] + (tokens[len(tokens) - tail :] if tail else [])


def check_max_length(tokenizer: Tokenizer, max_length: int, pairs: bool = False) -> None:
    """A ConfigError when ``max_length`` cannot work: above the model's positions (an index error
    deep in the model otherwise), or too short for the special tokens."""
    limit = getattr(tokenizer, "max_positions", None)
    if limit is not None and max_length > limit:
        source = getattr(tokenizer, "limit_source", "") or "the model's position embeddings"
        raise ConfigError(
            f"--max-length {max_length} is more than the model's {limit} positions ({source}); "
            f"use --max-length {limit} or less"
        )
    least = 3 if pairs else 2
    if max_length < least:
        raise ConfigError(
            f"--max-length {max_length} leaves no room for text after the {least} special tokens"
        )


def pack(
    a: list[int], b: list[int] | None, cls_id: int, sep_id: int
) -> tuple[list[int], list[int]]:
    """(input ids, segment ids) for ``[CLS] a [SEP]`` or ``[CLS] a [SEP] b [SEP]``."""
    ids = [cls_id, *a, sep_id]
    types = [0] * len(ids)
    if b is not None:
        ids += [*b, sep_id]
        types += [1] * (len(b) + 1)
    return ids, types


@dataclass
class Packed:
    """Packed examples stored flat: example ``i`` is ``ids[offsets[i]:offsets[i + 1]]``."""

    ids: np.ndarray
    types: np.ndarray
    offsets: np.ndarray
    # tokens each example had before truncation, special tokens included (None when unknown,
    # e.g. read from the packing cache)
    full_lengths: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def truncated(self) -> np.ndarray:
        """Whether each example was cut to fit the max length."""
        if self.full_lengths is None:
            return np.zeros(len(self), dtype=bool)
        return self.full_lengths > self.lengths

    def take(self, indices: Sequence[int]) -> Packed:
        """The examples at ``indices``, in that order, as their own ``Packed``."""
        ids = [self.ids[self.offsets[i] : self.offsets[i + 1]] for i in indices]
        types = [self.types[self.offsets[i] : self.offsets[i + 1]] for i in indices]
        offsets = np.concatenate([[0], np.cumsum([len(x) for x in ids])]).astype(np.int64)
        if not ids:
            return Packed(self.ids[:0], self.types[:0], offsets)
        return Packed(np.concatenate(ids), np.concatenate(types), offsets)

    def example(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        start, end = self.offsets[i], self.offsets[i + 1]
        return self.ids[start:end], self.types[start:end]


def pack_texts(
    tokenizer: Tokenizer,
    texts: Sequence[str],
    pairs: Sequence[str] | None,
    max_length: int,
    truncation: str,
    batch_size: int = 4096,
) -> Packed:
    """Tokenise in batches with the fast tokenizer, truncate and pack every example."""
    check_max_length(tokenizer, max_length, pairs is not None)
    if pairs is not None and len(pairs) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(pairs)} pair texts")
    all_ids: list[int] = []
    all_types: list[int] = []
    offsets = [0]
    full_lengths: list[int] = []
    for start in range(0, len(texts), batch_size):
        a_ids = tokenizer.encode_batch(list(texts[start : start + batch_size]))
        b_ids = (
            tokenizer.encode_batch(list(pairs[start : start + batch_size]))
            if pairs is not None
            else [None] * len(a_ids)
        )
        for a, b in zip(a_ids, b_ids):
            full_lengths.append(len(a) + (len(b) + 3 if b is not None else 2))
            a, b = truncate_pair(a, b, max_length, truncation)
            ids, types = pack(a, b, tokenizer.cls_token_id, tokenizer.sep_token_id)
            all_ids += ids
            all_types += types
            offsets.append(len(all_ids))
    return Packed(
        np.asarray(all_ids, np.int32),
        np.asarray(all_types, np.int8),
        np.asarray(offsets, np.int64),
        np.asarray(full_lengths, np.int64),
    )


def default_cache_dir() -> Path:
    from bertfit.data.download import cache_root

    return cache_root()


def cache_key(
    tokenizer: Tokenizer,
    texts: Sequence[str],
    pairs: Sequence[str] | None,
    max_length: int,
    truncation: str,
) -> str:
    """Content hash of the inputs plus everything that changes the packed result."""
    digest = hashlib.sha256()
    digest.update(
        f"{PACKING_VERSION}|{tokenizer.fingerprint()}|{max_length}|{truncation}|{pairs is not None}".encode()
    )
    for text in texts:
        digest.update(text.encode("utf-8", "surrogatepass") + b"\x1e")
    for text in pairs or ():
        digest.update(text.encode("utf-8", "surrogatepass") + b"\x1e")
    return digest.hexdigest()[:32]


def pack_cached(
    tokenizer: Tokenizer,
    texts: Sequence[str],
    pairs: Sequence[str] | None,
    max_length: int,
    truncation: str,
    cache_dir: str | os.PathLike | None = None,
) -> Packed:
    """``pack_texts`` with an on-disk cache, so a second run on the same data skips tokenising."""
    check_max_length(tokenizer, max_length, pairs is not None)
    folder = Path(cache_dir) if cache_dir else default_cache_dir()
    path = folder / "packed" / f"{cache_key(tokenizer, texts, pairs, max_length, truncation)}.npz"
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as stored:
                packed = Packed(stored["ids"], stored["types"], stored["offsets"])
            if _consistent(packed, len(texts), max_length):
                return packed
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile, zlib.error):
            pass  # a damaged cache entry is rebuilt below
    packed = pack_texts(tokenizer, texts, pairs, max_length, truncation)
    try:
        save_file_atomic(lambda tmp: _save_npz(tmp, packed), path)
    except OSError:
        pass  # a read-only or full cache must not stop training
    return packed


def _consistent(packed: Packed, count: int, max_length: int) -> bool:
    """Whether a cached entry has the shape of ``count`` packed examples of at most ``max_length``."""
    offsets = packed.offsets
    return (
        offsets.ndim == 1
        and len(offsets) == count + 1
        and (count == 0 or (offsets[0] == 0 and offsets[-1] == len(packed.ids)))
        and len(packed.types) == len(packed.ids)
        and bool(np.all(np.diff(offsets) >= 2))
        and bool(np.all(np.diff(offsets) <= max_length))
    )


def _save_npz(tmp: str, packed: Packed) -> None:
    with open(tmp, "wb") as handle:
        np.savez(handle, ids=packed.ids, types=packed.types, offsets=packed.offsets)


def length_grouped_batches(
    lengths: np.ndarray, batch_size: int, seed: int, group: int = 50
) -> list[np.ndarray]:
    """Shuffled batches of similar-length examples.

    The examples are shuffled, cut into groups of ``group`` batches, sorted by length within each
    group and sliced into batches; then the batch order is shuffled. Same seed, same batches.
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lengths))
    span = batch_size * group
    batches = []
    for start in range(0, len(order), span):
        chunk = order[start : start + span]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def budget_cuts(
    lengths: Sequence[int], budget: int, limit: int | None = None
) -> list[tuple[int, int]]:
    """(start, end) runs of rows sorted longest first, each as long as rows x its first (longest)
    row stays within ``budget`` (a longer single row goes alone). With ``limit`` it stops once
    past that many runs and puts the rest in one last run (enough to tell that it is over)."""
    cuts, start = [], 0
    while start < len(lengths) and (limit is None or len(cuts) <= limit):
        rows = max(1, budget // max(1, int(lengths[start])))
        cuts.append((start, min(len(lengths), start + rows)))
        start = cuts[-1][1]
    return cuts if start >= len(lengths) else cuts + [(start, len(lengths))]


def sorted_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Batches in length order, for evaluation and prediction (results are put back in order)."""
    order = np.argsort(-lengths, kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def collate(
    packed: Packed, indices: np.ndarray, pad_id: int, labels: np.ndarray | None = None
) -> dict[str, torch.Tensor]:
    """Pad the examples at ``indices`` to the longest among them (not to max length)."""
    lengths = packed.lengths[indices]
    width = int(lengths.max())
    ids = np.full((len(indices), width), pad_id, dtype=np.int64)
    types = np.zeros((len(indices), width), dtype=np.int64)
    mask = np.zeros((len(indices), width), dtype=np.int64)
    for row, i in enumerate(indices):
        start, end = packed.offsets[i], packed.offsets[i + 1]
        ids[row, : end - start] = packed.ids[start:end]
        types[row, : end - start] = packed.types[start:end]
        mask[row, : end - start] = 1
    batch = {
        "input_ids": torch.from_numpy(ids),
        "token_type_ids": torch.from_numpy(types),
        "attention_mask": torch.from_numpy(mask),
    }
    if labels is not None:
        batch["labels"] = torch.from_numpy(np.asarray(labels[indices]))
    return batch


def iterate_batches(
    batches: list[np.ndarray], packed: Packed, pad_id: int, labels: np.ndarray | None = None
) -> Iterator[tuple[np.ndarray, dict[str, torch.Tensor]]]:
    for indices in batches:
        yield indices, collate(packed, indices, pad_id, labels)
