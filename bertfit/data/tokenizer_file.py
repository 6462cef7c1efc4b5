"""A run's tokenizer read straight from its ``tokenizer.json`` by the tokenizers library.

Loading it through transformers costs about a second of imports on a 2-core CPU, which is a third
of a one-sentence ``bertfit predict``; the Rust tokenizer that does the work is the same one.
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path


class RustTokenizer:
    """A ``tokenizers.Tokenizer`` behind the packing interface (same ids as ``HFTokenizer``)."""

    def __init__(self, tokenizer, cls_token_id: int, sep_token_id: int, pad_token_id: int) -> None:
        self.rust = tokenizer
        self.cls_token_id, self.sep_token_id = cls_token_id, sep_token_id
        self.pad_token_id = pad_token_id
        self.max_positions: int | None = None
        self.limit_source = ""
        self._fingerprint: str | None = None
        self._lock = threading.Lock()  # a Rust tokenizer is not to be used by two threads at once

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        with self._lock:
            encoded = self.rust.encode_batch(list(texts), add_special_tokens=False)
        return [e.ids for e in encoded]

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
        return [self.rust.id_to_token(int(i)) for i in ids]

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = hashlib.sha256(self.rust.to_str().encode()).hexdigest()[:16]
        return self._fingerprint

    def __getstate__(self) -> dict:  # a lock does not pickle: each copy gets its own
        state = {k: v for k, v in self.__dict__.items() if k not in ("_lock", "rust")}
        return {**state, "rust": self.rust.to_str()}

    def __setstate__(self, state: dict) -> None:
        from tokenizers import Tokenizer

        self.__dict__.update(state)
        self.rust = as_transformers_calls_it(Tokenizer.from_str(state["rust"]))
        self._lock = threading.Lock()


def as_transformers_calls_it(tokenizer):
    """No truncation or padding of its own (packing does both), and a "[SEP]" typed inside a text
    stays text (``split_special_tokens``); none of this is kept by ``to_str``."""
    tokenizer.no_truncation()
    tokenizer.no_padding()
    tokenizer.encode_special_tokens = True
    return tokenizer


def _token_name(value) -> str | None:
    """A special token as tokenizer_config.json writes it: a string or an AddedToken dict."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


BERT_CLASSES = ("BertTokenizer", "BertTokenizerFast")
# tokenizer_config.json's options that transformers writes into the normalizer when it loads
NORMALIZER_OPTIONS = {
    "do_lower_case": "lowercase",
    "strip_accents": "strip_accents",
    "tokenize_chinese_chars": "handle_chinese_chars",
}


def _plain_bert_tokenizer(config: dict, saved: dict) -> bool:
    """A BERT WordPiece tokenizer whose tokenizer.json (``saved``) already holds every option of
    its tokenizer_config.json; anything else is left to transformers, which knows all the rules."""
    if config.get("tokenizer_class") not in BERT_CLASSES:
        return False
    normalizer = saved.get("normalizer") or {}
    if normalizer.get("type") != "BertNormalizer":
        return False
    return all(
        config[option] == normalizer.get(field)
        for option, field in NORMALIZER_OPTIONS.items()
        if option in config
    )


def load_tokenizer_file(directory: Path) -> RustTokenizer | None:
    """The tokenizer of a saved BERT-style model folder, or None when the folder's tokenizer is
    not a plain ``tokenizer.json`` with [CLS]/[SEP] tokens (transformers then loads it)."""
    path, config_path = directory / "tokenizer.json", directory / "tokenizer_config.json"
    if not (path.is_file() and config_path.is_file()):
        return None
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        text = path.read_text(encoding="utf-8")
        if not _plain_bert_tokenizer(config, json.loads(text)):
            return None
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_str(text)
    except Exception:  # anything odd: transformers' loader reports it properly
        return None
    names = {k: _token_name(config.get(k)) for k in ("cls_token", "sep_token", "pad_token")}
    ids = {k: tokenizer.token_to_id(v) if v else None for k, v in names.items()}
    if ids["cls_token"] is None or ids["sep_token"] is None:
        return None
    pad = ids["pad_token"] if ids["pad_token"] is not None else 0
    return RustTokenizer(
        as_transformers_calls_it(tokenizer), ids["cls_token"], ids["sep_token"], pad
    )
