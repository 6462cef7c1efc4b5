"""bertfit: fine-tune pretrained BERT-family encoders for text classification and text pairs.

import bertfit
run = bertfit.train(bertfit.TrainConfig(train="train.tsv", output="runs/x", text_column="sentence"))
bertfit.load("runs/x").predict(["a gorgeous, witty, seductive movie"])
bertfit.load_embedder("default").encode(["A plane is taking off."])
"""

__version__ = "0.1.0"

from bertfit.config.commands import EvaluateConfig, PredictConfig, QuickstartConfig, TrainConfig  # noqa: E402
from bertfit.errors import BertfitError, ConfigError, DataError, ModelError  # noqa: E402


def train(config: TrainConfig):
    """Fine-tune and return the finished :class:`bertfit.predict.Run`."""
    from bertfit.training.run import train as _train

    return _train(config)


def load(run_dir, device: str = "auto", checkpoint: str | None = None):
    """Load a finished run directory for prediction (or one of its checkpoints: best, last, a step)."""
    from bertfit.serve.run import load as _load

    return _load(run_dir, device, checkpoint)


def load_embedder(model: str, device: str = "auto"):
    """A sentence embedder from a bi-encoder run or any encoder spec (``"default"``, a folder)."""
    from bertfit.serve.embed import load_embedder as _load_embedder

    return _load_embedder(model, device)


def evaluate(config: EvaluateConfig) -> dict:
    """Score a run on a labelled file; returns the metrics dict."""
    from bertfit.serve.commands import evaluate as _evaluate

    return _evaluate(config)


__all__ = [
    "BertfitError",
    "ConfigError",
    "DataError",
    "EvaluateConfig",
    "ModelError",
    "PredictConfig",
    "QuickstartConfig",
    "TrainConfig",
    "__version__",
    "evaluate",
    "load",
    "load_embedder",
    "train",
]
