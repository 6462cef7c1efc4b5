"""The measured default recipes: what ``TrainConfig.resolve`` fills in for the options a user
leaves out, by encoder and by input (single texts or text pairs, classifier or bi-encoder).

Each value for the default encoder was chosen with ``bertfit tune`` on dev splits and checked
over three seeds against the one it replaced (benchmarks/recipe_seeds.py, results in
benchmarks/results/); the others follow the literature named beside them.
"""

from __future__ import annotations

from typing import Any

DEFAULT_BATCH_SIZE = 32
PAIRS_BATCH_SIZE = 16  # classifiers on text pairs: batch 16 beat 32 in the SNLI study below
GENERAL = {"warmup_ratio": 0.1, "weight_decay": 0.01}

# all-MiniLM-L6-v2, single texts: two SST-2 studies (16 trials each) and a 3-seed check found
# nothing better beyond seed noise (results/recipe_seeds-sst2-8k-1ep-2026-12-04.json).
DEFAULT_ENCODER_SINGLE = {"lr": 1.5e-4, "layer_lr_decay": 0.9}
# all-MiniLM-L6-v2, text pairs: the best of a study on SNLI validation pairs (2 epochs), better
# than the single-text recipe on every one of three seeds on SNLI (0.775 -> 0.787 accuracy), RTE
# (0.568 -> 0.620) and MRPC (F1 0.867 -> 0.868): results/recipe_seeds-{snli-2ep,rte,mrpc}-*.json.
# Regressions on pairs keep the single-text recipe: on STS-B the pairs one gave Spearman 0.861
# against 0.859 over three seeds, within the spread (results/recipe_seeds-stsb-pairs-recipe-*).
DEFAULT_ENCODER_PAIRS = {
    "lr": 1.109e-4,
    "warmup_ratio": 0.0265,
    "weight_decay": 0.0365,
    "layer_lr_decay": 0.887,
    "dropout": 0.0339,
}
D2L = {"lr": 1e-4, "layer_lr_decay": 1.0}  # the d2l book's fine-tuning rate
OTHER_ENCODERS = {"lr": 3e-5, "layer_lr_decay": 1.0}  # BERT-base models (the BERT paper's grid)
BI_ENCODERS = {"lr": 2e-5, "layer_lr_decay": 1.0}  # SBERT's; classifier rates undo its training


def default_batch_size(pair_classifier: bool) -> int:
    return PAIRS_BATCH_SIZE if pair_classifier else DEFAULT_BATCH_SIZE


def recipe(
    default_encoder: bool, d2l: bool, bi_encoder: bool, pair_classifier: bool
) -> dict[str, Any]:
    """The optimisation defaults for this encoder and input (options a user gives win).

    ``pair_classifier``: a classifier (single- or multi-label, not a regression) on text pairs.
    """
    chosen: dict[str, Any] = dict(GENERAL)
    if d2l:
        chosen |= D2L
    elif bi_encoder:
        chosen |= BI_ENCODERS
    elif default_encoder:
        chosen |= DEFAULT_ENCODER_PAIRS if pair_classifier else DEFAULT_ENCODER_SINGLE
    else:
        chosen |= OTHER_ENCODERS
    chosen["batch_size"] = default_batch_size(pair_classifier)
    # the default encoder's word embeddings are half its weights, cost 15 % of the time and
    # gained no accuracy in our measurements
    chosen["train_word_embeddings"] = not default_encoder
    return chosen
