"""``bertfit export RUN --format hf --output DIR``: exactly the files a model hub needs.

A run directory holds more than a model (bertfit.json, metrics, the report and its PNGs,
perhaps checkpoints); the export keeps the weights, ``config.json``, the tokenizer files and the
model card (``README.md``), plus sentence-transformers' files for a bi-encoder run, so that
``AutoModelForSequenceClassification.from_pretrained(DIR)`` (or ``SentenceTransformer(DIR)``)
loads it and the folder can be uploaded as it is. The folder is written under a temporary name
beside ``DIR`` and renamed into place when complete.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from bertfit.config.commands import ExportConfig
from bertfit.errors import ConfigError, ModelError
from bertfit.files import publish_tree, temporary_dir
from bertfit.rundir import CARD, CHECKPOINT_PREFIX, RESULTS, RunMeta, is_finished, read_meta

WEIGHTS = "model.safetensors"
MODEL_CONFIG = "config.json"
# every name a transformers tokenizer saves itself under, whichever kind it is
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)
SENTENCE_TRANSFORMERS_FILES = (
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
)


def export_run(config: ExportConfig) -> list[str]:
    """Write the finished run ``config.run_dir`` to ``config.output`` in the hub's layout; returns
    the names written (folders end in ``/``).

    Example: ``export_run(ExportConfig(run_dir="runs/sst2", output="hub/sst2"))``, then
    ``AutoModelForSequenceClassification.from_pretrained("hub/sst2")``.
    """
    config.validate()
    run_dir, output = Path(config.run_dir), Path(config.output)
    meta = _finished_run(run_dir)
    check_output(run_dir, output, config.overwrite)
    names = hub_files(run_dir, meta)
    write_folder(run_dir, names, output)
    return names


def _finished_run(run_dir: Path) -> RunMeta:
    """The run's metadata; a folder that is not a finished Hugging Face-format run is refused."""
    if not run_dir.is_dir():
        raise ModelError(f"{run_dir}: no such run directory")
    if run_dir.name.startswith(CHECKPOINT_PREFIX) and (run_dir.parent / RESULTS).is_file():
        raise ModelError(f"{run_dir}: is a checkpoint; export the finished run {run_dir.parent}")
    try:
        meta = read_meta(run_dir)
    except (OSError, ValueError, TypeError):
        raise ModelError(
            f"{run_dir}: not a bertfit run directory (no readable bertfit.json)"
        ) from None
    if not is_finished(run_dir):
        raise ModelError(
            f"{run_dir}: the run did not finish (no {RESULTS}), so there is no final model to "
            f"export; finish it with 'bertfit train --resume {run_dir}' (until then predict and "
            "evaluate can use its checkpoints with --checkpoint)"
        )
    if meta.encoder_kind == "d2l":
        raise ModelError(
            f"{run_dir}: trained from a d2l checkpoint, so its model is in bertfit's own format "
            "(d2l_config.json), which transformers cannot load; load the run itself with "
            "bertfit.load"
        )
    return meta


def check_output(run_dir: Path, output: Path, overwrite: bool) -> None:
    """--output must be a new or empty folder (or --overwrite), and never the run or around it."""
    where, run = output.resolve(), run_dir.resolve()
    if where == run or run.is_relative_to(where) or where.is_relative_to(run):
        raise ConfigError(
            f"--output {output}: must be outside the run directory {run_dir} (and not hold it)"
        )
    if output.exists() and not output.is_dir():
        raise ConfigError(f"--output {output}: exists and is not a directory")
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise ConfigError(
            f"--output {output}: directory exists and is not empty; pass --overwrite to replace it"
        )


def hub_files(run_dir: Path, meta: RunMeta) -> list[str]:
    """The run's files a hub needs: weights, config, tokenizer, card (and a bi-encoder's
    sentence-transformers modules, as its modules.json lists them)."""
    missing = [name for name in (WEIGHTS, MODEL_CONFIG, CARD) if not (run_dir / name).is_file()]
    if missing:
        raise ModelError(f"{run_dir}: incomplete run, missing {', '.join(missing)}")
    names = [WEIGHTS, MODEL_CONFIG]
    names += [name for name in TOKENIZER_FILES if (run_dir / name).is_file()]
    if meta.is_embedding:
        names += [name for name in SENTENCE_TRANSFORMERS_FILES if (run_dir / name).is_file()]
        names += [f"{folder}/" for folder in _module_folders(run_dir)]
    return [*names, CARD]


def _module_folders(run_dir: Path) -> list[str]:
    """The folders of the sentence-transformers modules after the transformer (pooling, ...)."""
    try:
        modules = json.loads((run_dir / "modules.json").read_text(encoding="utf-8"))
        folders = [module["path"] for module in modules if module.get("path")]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ModelError(f"{run_dir}: modules.json cannot be read ({err})") from None
    for folder in folders:
        if Path(folder).is_absolute() or ".." in Path(folder).parts:
            raise ModelError(f"{run_dir}: modules.json names a folder outside the run: {folder}")
        if not (run_dir / folder).is_dir():
            raise ModelError(f"{run_dir}: incomplete run, missing the module folder {folder}/")
    return folders


def write_folder(run_dir: Path, names: list[str], output: Path) -> None:
    """Copy ``names`` into a temporary folder beside ``output``, then rename it into place (an
    old ``output`` is moved aside first and deleted once the new one stands)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_dir(output.parent, f".{output.name}.")
    try:
        for name in names:
            source, target = run_dir / name.rstrip("/"), tmp / name.rstrip("/")
            if name.endswith("/"):
                shutil.copytree(source, target, copy_function=shutil.copyfile)
            else:
                shutil.copyfile(source, target)
        publish_tree(tmp)
        replace_folder(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_folder(tmp: Path, output: Path) -> None:
    """Rename the complete ``tmp`` to ``output``; an old ``output`` is moved aside first and
    deleted once the new one stands."""
    old = None
    if output.is_dir() and any(output.iterdir()):
        old = temporary_dir(output.parent, f".{output.name}.old.")
        os.replace(output, old)  # onto the empty temporary folder
    os.replace(tmp, output)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
