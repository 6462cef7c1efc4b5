"""bertfit: fine-tune pretrained BERT-family encoders for text classification and text pairs.

import bertfit
run = bertfit.train(bertfit.TrainConfig(train="train.tsv", output="runs/x", text_column="sentence"))
bertfit.load("runs/x").predict(["a gorgeous, witty, seductive movie"])
bertfit.load_embedder("default").encode(["A plane is taking off."])
"""

__version__ = "0.1.0"

from bertfit.config.commands import EvaluateConfig, PredictConfig, QuickstartConfig
from bertfit.config.train import TrainConfig
from bertfit.config.tune import TuneConfig
from bertfit.errors import BertfitError, ConfigError, DataError, ModelError  # noqa: E402


def train(config: TrainConfig, train=None, dev=None):
    """Fine-tune and return the finished run (``bertfit.inference.run.Run``; with ``objective``, an
    ``Embedder``). ``train``/``dev`` take rows in memory instead of files: a list of dicts, a
    pandas DataFrame or a Hugging Face ``Dataset``."""
    from bertfit.training.launch import train as _train  # --nproc: in N processes

    return _train(config, train, dev)


def load(run_dir, device: str = "auto", checkpoint: str | None = None, backend: str = "torch"):
    """Load a finished run directory for prediction (or one of its checkpoints: best, last, a step).

    A classifier run gives a ``Run`` (``predict``, ``explain``); a bi-encoder run gives its
    ``Embedder`` (``encode``, ``similarity``), as ``load_embedder`` does. ``backend="onnx"``
    runs the model ``bertfit export RUN --format onnx`` wrote, under onnxruntime."""
    from bertfit.inference.embed import is_bi_encoder_run, load_bi_encoder_run
    from bertfit.inference.run import load as _load

    if is_bi_encoder_run(run_dir):
        return load_bi_encoder_run(run_dir, device, checkpoint, backend=backend)
    return _load(run_dir, device, checkpoint, backend)


def load_embedder(model: str, device: str = "auto", precision: str = "auto"):
    """A sentence embedder from a bi-encoder run or any encoder spec (``"default"``, a folder);
    ``precision="fp32"`` gives sentence-transformers' vectors, ``"auto"`` bf16 where supported."""
    from bertfit.inference.embed import load_embedder as _load_embedder

    return _load_embedder(model, device, precision)


def tune(config: TuneConfig):
    """Search ``train``'s options with Optuna; the best trial's run is kept as ``OUTPUT/best``.
    Returns a ``bertfit.tuning.run.TuneResult`` (best trial, score, parameters, folder, command)."""
    from bertfit.tuning.run import tune as _tune

    return _tune(config)


def evaluate(config: EvaluateConfig, data=None) -> dict:
    """Score a run on a labelled file, a task split or rows in memory (``data``); returns the
    metrics dict."""
    from bertfit.evaluation.score import evaluate as _evaluate

    return _evaluate(config, data=data)


__all__ = [
    "BertfitError",
    "ConfigError",
    "DataError",
    "EvaluateConfig",
    "ModelError",
    "PredictConfig",
    "QuickstartConfig",
    "TrainConfig",
    "TuneConfig",
    "__version__",
    "evaluate",
    "load",
    "load_embedder",
    "train",
    "tune",
]
