"""Pooling: how token vectors become one sentence vector, and the sentence-transformers files that
record it next to the model (so ``SentenceTransformer(run_dir)`` embeds the same way)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from bertfit.errors import ModelError
from bertfit.files import write_json

POOLINGS = ("mean", "cls", "max")


ST_POOLING_KEYS = {
    "mean": "pooling_mode_mean_tokens",
    "cls": "pooling_mode_cls_token",
    "max": "pooling_mode_max_tokens",
}


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: str = "mean") -> torch.Tensor:
    """One vector per sequence from token vectors ``hidden`` (batch, length, width).

    ``mask`` (batch, length) is 1 for real tokens: padding never enters a mean or a max.
    """
    if mode == "cls":
        return hidden[:, 0]
    keep = mask.unsqueeze(-1).to(hidden.dtype)
    if mode == "max":
        return hidden.masked_fill(keep == 0, torch.finfo(hidden.dtype).min).amax(dim=1)
    if mode == "mean":
        return (hidden * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1)
    raise ValueError(f"unknown pooling {mode!r}; choose one of {', '.join(POOLINGS)}")


@dataclass
class Pooling:
    """How token vectors become a sentence vector, as stored next to the model."""

    mode: str = "mean"
    normalize: bool = False
    max_length: int = 128


def read_pooling(folder: Path, max_length: int = 128) -> Pooling:
    """The pooling a sentence-transformers folder declares; mean pooling for a plain encoder."""
    modules_path = folder / "modules.json"
    if not modules_path.is_file():
        return Pooling("mean", False, max_length)
    try:
        modules = json.loads(modules_path.read_text(encoding="utf-8"))
        types = [m.get("type", "") for m in modules]
        pooling_dir = next(
            (folder / m["path"] for m in modules if m.get("type", "").endswith("Pooling")), None
        )
        config = (
            json.loads((pooling_dir / "config.json").read_text(encoding="utf-8"))
            if pooling_dir is not None and (pooling_dir / "config.json").is_file()
            else {}
        )
        st_config = folder / "sentence_bert_config.json"
        if st_config.is_file():
            max_length = json.loads(st_config.read_text(encoding="utf-8")).get(
                "max_seq_length", max_length
            )
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise ModelError(
            f"{modules_path}: cannot read the sentence-transformers files ({err})"
        ) from None
    mode = next((name for name, key in ST_POOLING_KEYS.items() if config.get(key)), "mean")
    normalize = any(t.endswith("Normalize") for t in types)
    return Pooling(mode, normalize, int(max_length))


def write_sentence_transformers_files(folder: Path, pooling: Pooling, width: int) -> None:
    """``modules.json``, ``1_Pooling/config.json`` (and ``2_Normalize``) for ``SentenceTransformer``."""
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
    ]
    if pooling.normalize:
        modules.append(
            {
                "idx": 2,
                "name": "2",
                "path": "2_Normalize",
                "type": "sentence_transformers.models.Normalize",
            }
        )
        (folder / "2_Normalize").mkdir(exist_ok=True)
    write_json(
        folder / "1_Pooling" / "config.json",
        {
            "word_embedding_dimension": width,
            **{key: name == pooling.mode for name, key in ST_POOLING_KEYS.items()},
            "pooling_mode_mean_sqrt_len_tokens": False,
        },
    )
    write_json(folder / "modules.json", modules)
    write_json(
        folder / "sentence_bert_config.json",
        {"max_seq_length": pooling.max_length, "do_lower_case": False},
    )
