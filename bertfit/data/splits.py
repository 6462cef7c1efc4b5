"""Held-out splits: a seeded, stratified dev fraction of the training data."""

from __future__ import annotations

import random


def stratified_split(labels: list[str], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train indices, dev indices): ``fraction`` of each label's rows held out, chosen by seed."""
    by_label: dict[str, list[int]] = {}
    for index, label in enumerate(labels):
        by_label.setdefault(label, []).append(index)
    rng = random.Random(seed)
    dev: list[int] = []
    for label in sorted(by_label):
        members = by_label[label]
        rng.shuffle(members)
        take = round(len(members) * fraction)
        if len(members) >= 2:
            take = min(max(take, 1), len(members) - 1)
        dev.extend(members[:take])
    held = set(dev)
    return [i for i in range(len(labels)) if i not in held], sorted(dev)


def stratify_keys(labels: list, kind: str) -> list[str]:
    """What a held-out split is balanced on: the label, a score decile, or nothing (multi-label)."""
    if kind == "single":
        return list(labels)
    if kind == "score":
        ranks = sorted(range(len(labels)), key=labels.__getitem__)
        keys = [""] * len(labels)
        for rank, index in enumerate(ranks):
            keys[index] = str(rank * 10 // len(labels))
        return keys
    return [""] * len(labels)
