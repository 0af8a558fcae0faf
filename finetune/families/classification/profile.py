"""The data profile of a classifier's prepared splits (reports/preprocess.json `profile`, finetune/data/profile.py): rows
per split, each head's classes and their balance, near duplicates (when the task turns its inputs into vectors) and the
task's own facts about its inputs, with what was chosen from them and what is suggested.

Suggestions, each from a measurement of this project:
- classes 5x apart or more under plain cross-entropy: weighted cross-entropy (docs/benchmarks/imbalanced.md: Fashion-MNIST
  with five 10x rarer classes, macro F1 0.827 -> 0.846, rare-class recall 0.748 -> 0.788). The default tweets are 3.9x
  apart and get no note.
- val/test rows nearly repeating train rows (1 % or more): the scores are optimistic (data/profile.py).
"""
from __future__ import annotations

import pandas as pd

from finetune.data import heads, numbers, profile
from finetune.data.sources import LABEL

IMBALANCE = 5.0


def _imbalance_note(where: str, facts: dict, train) -> list[str]:
    if facts["largest_to_smallest"] < IMBALANCE or train.loss != "cross_entropy" or train.balance != "none":
        return []
    (large, n_large), (small, n_small) = facts["largest"], facts["smallest"]
    return [f"{where}the largest class ({large}, {n_large} train rows) has {facts['largest_to_smallest']}x the rows of the smallest "
            f"({small}, {n_small}): consider train.loss: weighted_cross_entropy (on Fashion-MNIST with five 10x rarer classes it "
            "raised macro F1 from 0.827 to 0.846 and rare-class recall from 0.748 to 0.788, docs/benchmarks/imbalanced.md)"]


def run(task, params, tables: dict[str, pd.DataFrame], labels, layout: dict) -> dict:
    """`tables`: the featurized splits (augmented copies are left out); `labels`: the label order (or {head: labels})."""
    originals = {name: table[~table["augmented"]] for name, table in tables.items()}
    inputs, chosen, notes = task.input_profile(originals, layout, params)
    result = {"rows": {name: len(table) for name, table in originals.items()}}
    if numbers.is_number(layout):  # a numeric label: its spread per split, no classes
        result["numbers"] = {name: numbers.quantiles(table[LABEL]) for name, table in originals.items()}
    else:
        counts = heads.split_counts(originals["train"][LABEL], labels, layout.get("targets"))
        per_head = counts if isinstance(labels, dict) else {"": counts}
        result["numbers"] = {head: counts[head] for head in layout.get("targets") or {}}  # number heads: their spread
        classes = {head: profile.balance(n) for head, n in per_head.items() if head not in result["numbers"]}
        result["classes"] = classes if isinstance(labels, dict) else classes[""]
        for head, facts in classes.items():
            notes = notes + _imbalance_note(f"head {head}: " if head else "", facts, params.train)
    result["inputs"] = inputs
    vectors = task.similarity(layout)
    if vectors is not None:
        embed, threshold, method = vectors
        result["near_duplicates"] = profile.near_duplicates(embed, originals, threshold, method, params.data.seed)
        notes = notes + profile.near_duplicate_notes(result["near_duplicates"], task.display_name)
    return {**result, "chosen": chosen, "notes": notes}
