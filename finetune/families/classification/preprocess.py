"""preprocess for classifiers: clean, split train/val/test, featurize every split through the task.

Cleaning first normalizes each input through the task (text: HTML entities decoded, optional URL / user placeholders,
whitespace; how many inputs changed is counted), then drops (with the reason) unusable inputs (text: empty), inputs
given different labels, and duplicates; duplicates are found on the task's duplicate key (text: whitespace-normalised,
case-folded; images: the decoded pixels), so no example can appear in two splits.
Splits: stratified and seeded by data.splits, or the data's own split (data.split_column, or a builtin that comes
split): a split without val rows gets val carved from its train rows, and an example in train AND val/test is dropped
from val/test ("leakage").
Features come from the task (text: tokens; images: resized uint8 pixels) and the train stage's model; what the task
chose while featurizing (text: max_length and why) is reported as `features`, and the data profile (profile.py: classes,
near duplicates, the task's facts about its inputs, what was chosen from them and what is suggested) as `profile`.
Several heads (data.label_columns, finetune/data/heads.py): splits stratified on the first head's label; every head
needs labels in every split and is checked like one label; label_map.json gets `heads`, and `label` holds one index per head.
"""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pandas as pd
from sklearn.model_selection import train_test_split

from finetune import paths
from finetune.config.params import Params
from finetune.config.sections import label_columns
from finetune.data import heads, numbers
from finetune.data.labels import read_kinds
from finetune.data.sources import INPUT, LABEL, SPLIT
from finetune.data.tables import LINE, ROW
from finetune.errors import UserError
from finetune.families.classification import profile
from finetune.families.classification.features import featurize
from finetune.io import write_json

SPLITS = ("train", "val", "test")
NUMERAL = re.compile(r"-?\d+(\.\d+)?")


def _label_order(labels) -> list[str]:
    labels = sorted(set(labels))
    if all(NUMERAL.fullmatch(label) for label in labels):
        return sorted(labels, key=float)  # numbers keep their numeric order: "2" before "10", "2.5" before "10"
    return labels


def _clean(frame: pd.DataFrame, keys: pd.Series, problems: pd.Series, noun: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(kept rows, dropped rows with a `problem` column). `problems` are the task's ("" = usable);
    `noun` names an input in the reasons ("text", "image")."""
    problems = problems.copy()
    usable = problems == ""
    labels_per_key = frame[usable].groupby(keys[usable])[LABEL].nunique()
    conflicting = keys.isin(labels_per_key[labels_per_key > 1].index) & usable
    problems[conflicting] = f"same {noun} with different labels"
    usable = problems == ""
    order = frame.index
    if SPLIT in frame:  # the data's own split: an example in train AND val/test is leakage there
        in_train = set(keys[usable & (frame[SPLIT] == "train")])
        problems[usable & (frame[SPLIT] != "train") & keys.isin(in_train)] = f"leakage: same {noun} is in train"
        usable = problems == ""
        order = frame[SPLIT].map({name: i for i, name in enumerate(SPLITS)}).sort_values(kind="stable").index
    repeated = keys[order][usable[order]].duplicated()  # the first copy (train first) is kept
    problems[repeated[repeated].index] = f"duplicate {noun}"
    dropped = frame[problems != ""].assign(problem=problems[problems != ""])
    return frame[problems == ""], dropped


def _stratified(frame: pd.DataFrame, size: float, params: Params, what: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    try:
        return train_test_split(frame, test_size=size, stratify=heads.strata(frame[LABEL], params.data), random_state=params.data.seed)
    except ValueError as error:  # e.g. a split too small to hold one row of every label
        raise UserError(f"{what} cannot split {len(frame)} rows by label: {error}") from None


def _split(frame: pd.DataFrame, params: Params) -> dict[str, pd.DataFrame]:
    splits = params.data.splits
    if SPLIT in frame:
        parts = {name: frame[frame[SPLIT] == name] for name in SPLITS}
        if parts["val"].empty and not parts["train"].empty:  # e.g. a builtin's official train/test split: val comes from train
            parts["train"], parts["val"] = _stratified(parts["train"], splits.val / (splits.train + splits.val), params,
                                                       f"data.splits {splits.model_dump()} (val carved from train)")
        return parts
    counts = heads.strata(frame[LABEL], params.data).value_counts()
    small = counts[counts < 3]
    if len(small):
        raise UserError(
            f"label(s) { {label: int(n) for label, n in small.items()} } have fewer than 3 rows after cleaning; a stratified train/val/test split "
            "needs at least 3 per label. Add data or leave them out with data.keep_labels"
        )
    rest, test = _stratified(frame, splits.test, params, f"data.splits {splits.model_dump()}")
    train, val = _stratified(rest, splits.val / (splits.train + splits.val), params, f"data.splits {splits.model_dump()}")
    return {"train": train, "val": val, "test": test}


def _check_labels(parts: dict[str, pd.DataFrame], columns: dict[str, str], classes: bool = True, number_heads=()
                  ) -> list[str] | dict[str, list[str]]:
    """The label order (with several heads: {head: its labels}, a number head's ["value"]), once every split is fit to
    train and score on (numbers, `classes` False: only that no split is empty)."""
    for name in ("val", "test"):
        if parts[name].empty:
            raise UserError(f"the {name} split is empty; check data.splits or data.split_column")
    if not classes:
        return []
    if not columns:
        return _labels_of({name: part[LABEL] for name, part in parts.items()}, "")
    for name, part in parts.items():
        heads.check_every_head_labelled(part[LABEL], columns, f"the {name} split")
    rows = {name: pd.DataFrame(heads.decode(part[LABEL]), index=part.index) for name, part in parts.items()}
    return {head: [numbers.OUTPUT] if head in number_heads else _labels_of({name: frame[head].dropna() for name, frame in rows.items()},
                                                                            f"head {head!r}: ") for head in columns}


def _head_targets(train: pd.DataFrame, data) -> dict[str, dict]:
    """{number head: the train mean, std and column of its labels} (finetune/data/numbers.py)."""
    rows, columns = pd.DataFrame(heads.decode(train[LABEL]), index=train.index), label_columns(data)
    return {head: numbers.target(numbers.parse(rows[head].dropna())[0], columns[head]) for head in data.number_heads}


def _labels_of(labels: dict[str, pd.Series], what: str) -> list[str]:
    """The label order of one head, once train has at least 2 labels and val/test none that train lacks."""
    seen = set(labels["train"])
    if len(seen) < 2:
        raise UserError(f"{what}the train split has {len(seen)} label(s) ({sorted(seen)}); classification needs at least 2")
    for name in ("val", "test"):
        unseen = sorted(set(labels[name]) - seen)
        if unseen:
            raise UserError(f"{what}label(s) {unseen} appear in the {name} split but never in train; the model cannot learn them")
    return _label_order(seen)


def run(task, params: Params, frame: pd.DataFrame, folder: Path) -> tuple[dict, pd.DataFrame]:
    normalized, problems = task.normalize(frame[INPUT], params.preprocess)
    changed = int(normalized.ne(frame[INPUT]).sum())  # element by element: texts, image bytes...
    frame[INPUT] = normalized
    number = params.data.label_type == "number"  # ingest refused the labels that are no number
    keys = task.duplicate_key(frame[INPUT])
    frame, dropped = _clean(frame, keys, problems, task.display_name)
    if not number and not label_columns(params.data) and (warning := numbers.many_values_warning(frame[LABEL])):
        print(f"preprocess: warning: {warning}")
    parts = _split(frame, params)
    if number:
        _check_labels({name: part.assign(**{LABEL: "one"}) for name, part in parts.items()}, {}, classes=False)
        labels, target = [numbers.OUTPUT], numbers.target(numbers.parse(parts["train"][LABEL])[0], params.data.label_column)
    else:
        labels = _check_labels(parts, label_columns(params.data), number_heads=params.data.number_heads)
        target = _head_targets(parts["train"], params.data) if params.data.number_heads else None
    overlap = set(keys[parts["train"].index]) & set(keys[pd.concat([parts["val"], parts["test"]]).index])
    assert not overlap, f"leakage check failed: {len(overlap)} inputs in train and val/test"

    tables, label_map = featurize(task, params, {name: part.reset_index(names="id") for name, part in parts.items()}, labels, target)
    label_map["kinds"] = read_kinds(paths.INGESTED)  # what the names were in the data (finetune/data/labels.py), for predict
    summary = {"inputs_changed_by_normalization": changed, "dropped": dict(Counter(dropped["problem"])),
               **({"features": label_map["facts"]} if "facts" in label_map else {}), "splits": {}, "labels": labels,
               "profile": profile.run(task, params, tables, labels, label_map)}
    for name, table in tables.items():
        summary["splits"][name] = {
            "rows": len(table),
            "augmented_rows": int(table["augmented"].sum()),
            **task.split_statistics(table),
            "labels": numbers.quantiles(table[LABEL]) if number else heads.split_counts(table[LABEL], labels, label_map.get("targets")),
        }
        table.to_parquet(folder / f"{name}.parquet", index=False)
    write_json(folder / "label_map.json", label_map)
    sizes = {name: s["rows"] for name, s in summary["splits"].items()}
    print(f"preprocess: splits {sizes}, labels {labels}; dropped {summary['dropped']}")
    shown = dropped[[ROW, LINE, "problem"]].assign(**{task.display_name: task.display(dropped), LABEL: dropped[LABEL]})
    return summary, shown
