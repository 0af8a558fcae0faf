"""Model features of the prepared rows, through the task: preprocess featurizes for the train stage's model; ensemble
members, search trials and compress teachers rebuild their own features from the same prepared rows (their model or
preprocess settings may differ)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from finetune.data import heads, numbers


def featurize(task, params, parts: dict[str, pd.DataFrame], labels: list[str] | dict[str, list[str]], target: dict | None = None
              ) -> tuple[dict[str, pd.DataFrame], dict]:
    """(tables, label map). parts hold id, input, label (a name; several heads: a JSON object, finetune/data/heads.py) and
    origin; the tables get the task's features, `augmented`, and label as an index into `labels` (several: a list, one per
    head); a numeric label (`target`, finetune/data/numbers.py) as a float in its own units. With several heads `target`
    is {number head: its target} and a number head's label is its value (NaN where missing)."""
    kept = ["id", "input", "label", "origin"]
    tables, layout = task.featurize({name: part[[c for c in kept if c in part]] for name, part in parts.items()}, params)
    if isinstance(labels, dict):
        return ({name: table.assign(label=heads.indices(heads.decode(table["label"]), labels, target)) for name, table in tables.items()},
                {**heads.label_map(labels, target), **layout})
    if target is not None:
        return ({name: table.assign(label=numbers.parse(table["label"])[0].to_numpy()) for name, table in tables.items()},
                {"labels": [numbers.OUTPUT], "target": target, **layout})
    index = {label: i for i, label in enumerate(labels)}
    return {name: table.assign(label=table["label"].map(index).to_numpy()) for name, table in tables.items()}, {"labels": labels, **layout}


def _names(values: pd.Series, labels: list[str] | dict[str, list[str]]) -> list:
    """Prepared label indices back to what ingest stored (a name, or one JSON object of several)."""
    if labels == [numbers.OUTPUT]:  # numbers: as they are
        return list(values)
    if isinstance(labels, dict):  # a number head's value as it is (NaN: missing)
        def name(head, value):
            if labels[head] == [numbers.OUTPUT]:
                return None if np.isnan(value) else float(value)
            return None if value == heads.IGNORE else labels[head][int(value)]
        return [json.dumps({head: name(head, value) for head, value in zip(labels, row)}) for row in values]
    return [labels[i] for i in values]


def refeaturized(task, params, prepared: dict[str, pd.DataFrame], labels: list[str] | dict[str, list[str]], target: dict | None = None
                 ) -> tuple[dict[str, pd.DataFrame], dict]:
    """(tables, label map): the prepared rows featurized with `params`' model and preprocess settings; augmented copies
    are dropped and rebuilt by the task from the originals."""
    originals = {split: frame.loc[~frame["augmented"], [c for c in ("id", "input", "label", "origin") if c in frame]]
                 .assign(label=lambda f: _names(f["label"], labels))
                 for split, frame in prepared.items()}
    return featurize(task, params, originals, labels, target)
