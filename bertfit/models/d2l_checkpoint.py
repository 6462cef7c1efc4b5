"""The d2l book's checkpoints: find one (folder or zip), infer its config from the state dict,
load it safely, and save or load a fine-tuned d2l classifier as a run."""

from __future__ import annotations

import os
import pickle
import re
import shutil
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

import torch

from bertfit.errors import ConfigError, ModelError
from bertfit.files import save_file_atomic, write_json
from bertfit.models.d2l import (
    VOCAB_FILE,
    D2LBertForSequenceClassification,
    D2LConfig,
    D2LTokenizer,
    read_json,
    read_vocab,
)

PARAMS_FILE = "pretrained.params"


WEIGHTS_FILE = "model.safetensors"


CONFIG_FILE = "d2l_config.json"


MODEL_TYPE = "d2l_bert"


_BLOCK_KEY = re.compile(r"^encoder\.blks\.(\d+)\.")


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
        vocab = read_vocab(folder / VOCAB_FILE)
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
                    vocab = read_vocab(local[VOCAB_FILE], f"{p}:{members[0]}")
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
    raw = read_json(config_path, str(config_path))
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
