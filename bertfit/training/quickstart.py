"""The README's main job: fine-tune the default encoder on the bundled SST-2 sample, score it,
predict two sentences."""

from __future__ import annotations

from pathlib import Path

from bertfit.config.commands import (
    EvaluateConfig,
    QuickstartConfig,
)
from bertfit.config.train import TrainConfig
from bertfit.evaluation.score import evaluate

SAMPLES = Path(__file__).parents[1] / "samples"


QUICKSTART_SENTENCES = [
    "a gorgeous, witty, seductive movie.",
    "the plot is a tired mess and the jokes never land.",
]


def quickstart(config: QuickstartConfig) -> dict:
    """The README's main job: fine-tune the default encoder on the bundled SST-2 sample."""
    from bertfit.training.run import train

    config.validate()
    run = train(
        TrainConfig(
            train=str(SAMPLES / "sst2_train.tsv.gz"),
            dev=str(SAMPLES / "sst2_dev.tsv"),
            text_column="sentence",
            label_column="label",
            label_names="0=negative,1=positive",
            output=config.output,
            epochs=config.epochs,
            train_limit=config.train_limit,
            overwrite=config.overwrite,
            progress=config.progress,
        )
    )
    metrics = evaluate(
        EvaluateConfig(run_dir=config.output, data=str(SAMPLES / "sst2_dev.tsv")), run
    )
    predictions = run.predict(QUICKSTART_SENTENCES)
    return {
        "run_dir": config.output,
        "metrics": metrics,
        "predictions": list(zip(QUICKSTART_SENTENCES, predictions)),
    }
