"""preprocess: clean, split train/val/test, augment train, tokenize with the model's tokenizer.

Cleaning drops (and quarantines, with the reason) empty texts, texts given different labels, and
duplicates; duplicates are found on the task's duplicate key (for text: whitespace-normalised,
case-folded), so no text can appear in two splits. With `data.split_column` the user's split is
kept and a text found in train AND val/test is dropped from val/test ("leakage").
Writes data/prepared/{train,val,test}.parquet + label_map.json, data/quarantine/preprocess.csv
and reports/preprocess.json.
"""
from __future__ import annotations

from collections import Counter

import pandas as pd
from sklearn.model_selection import train_test_split

from finetune import paths
from finetune.cli import main
from finetune.errors import UserError
from finetune.io import atomic_path, write_json, write_table
from finetune.params import Params
from finetune.sources import LABEL, SPLIT, TEXT, model_path
from finetune.tables import LINE, ROW
from finetune.tasks import get_task

SPLITS = ("train", "val", "test")


def _label_order(labels) -> list[str]:
    labels = sorted(set(labels))
    if all(label.lstrip("-").isdigit() for label in labels):
        return sorted(labels, key=int)  # integer labels keep their numeric order: "2" before "10"
    return labels


def _clean(frame: pd.DataFrame, keys: pd.Series) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(kept rows, dropped rows with a `problem` column)."""
    problems = pd.Series("", index=frame.index)
    problems[frame[TEXT] == ""] = "empty text"
    usable = problems == ""
    labels_per_key = frame[usable].groupby(keys[usable])[LABEL].nunique()
    conflicting = keys.isin(labels_per_key[labels_per_key > 1].index) & usable
    problems[conflicting] = "same text with different labels"
    usable = problems == ""
    order = frame.index
    if SPLIT in frame:  # the user's own split: a text in train AND val/test is leakage there
        in_train = set(keys[usable & (frame[SPLIT] == "train")])
        problems[usable & (frame[SPLIT] != "train") & keys.isin(in_train)] = "leakage: same text is in train"
        usable = problems == ""
        order = frame[SPLIT].map({name: i for i, name in enumerate(SPLITS)}).sort_values(kind="stable").index
    repeated = keys[order][usable[order]].duplicated()  # the first copy (train first) is kept
    problems[repeated[repeated].index] = "duplicate text"
    dropped = frame[problems != ""].assign(problem=problems[problems != ""])
    return frame[problems == ""], dropped


def _split(frame: pd.DataFrame, params: Params) -> dict[str, pd.DataFrame]:
    if SPLIT in frame:
        return {name: frame[frame[SPLIT] == name] for name in SPLITS}
    counts = frame[LABEL].value_counts()
    small = counts[counts < 3]
    if len(small):
        raise UserError(
            f"label(s) { {label: int(n) for label, n in small.items()} } have fewer than 3 rows after cleaning; a stratified train/val/test split "
            "needs at least 3 per label. Add data or leave them out with data.keep_labels"
        )
    splits, seed = params.data.splits, params.data.seed
    try:
        rest, test = train_test_split(frame, test_size=splits.test, stratify=frame[LABEL], random_state=seed)
        train, val = train_test_split(
            rest, test_size=splits.val / (splits.train + splits.val), stratify=rest[LABEL], random_state=seed
        )
    except ValueError as error:  # e.g. a split too small to hold one row of every label
        raise UserError(f"data.splits {splits.model_dump()} cannot split {len(frame)} rows by label: {error}") from None
    return {"train": train, "val": val, "test": test}


def _check_labels(parts: dict[str, pd.DataFrame]) -> None:
    seen = set(parts["train"][LABEL])
    if len(seen) < 2:
        raise UserError(f"the train split has {len(seen)} label(s) ({sorted(seen)}); classification needs at least 2")
    for name in ("val", "test"):
        if parts[name].empty:
            raise UserError(f"the {name} split is empty; check data.splits or data.split_column")
        unseen = sorted(set(parts[name][LABEL]) - seen)
        if unseen:
            raise UserError(f"label(s) {unseen} appear in the {name} split but never in train; the model cannot learn them")


def featurize(params: Params, parts: dict[str, pd.DataFrame], labels: list[str]) -> dict[str, pd.DataFrame]:
    """Augment train, then tokenize every split with `params`' model and preprocess settings.
    `parts` hold id, text and label (a name) columns; ensemble members call this with their own params."""
    task = get_task(params.task)
    augment = params.preprocess.augment
    parts = {name: part.assign(augmented=False) for name, part in parts.items()}
    if augment.copies:
        train = parts["train"]
        copies = pd.concat([train] * augment.copies)  # same order as task.augment's output
        copies[TEXT] = task.augment(train[TEXT], augment).to_numpy()
        copies["augmented"] = True
        parts["train"] = pd.concat([train, copies], ignore_index=True)
    processor = task.load_processor(model_path(params.train), params.train.trust_remote_code)
    label_ids = {label: i for i, label in enumerate(labels)}
    prep, tables = params.preprocess, {}
    for name, part in parts.items():
        part = part.reset_index(drop=True)
        features = task.encode(processor, part[TEXT], prep.max_length, prep.padding == "max_length")
        table = pd.concat([part[["id", TEXT]], features], axis=1)
        table[LABEL] = part[LABEL].map(label_ids).to_numpy()
        table["augmented"] = part["augmented"].to_numpy()
        tables[name] = table
    return tables


def feature_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if c not in ("id", TEXT, LABEL, "augmented", "truncated")]


def run(params: Params) -> dict:
    task = get_task(params.task)
    frame = pd.read_parquet(paths.INGESTED)
    frame[TEXT] = task.normalize(frame[TEXT])
    keys = task.duplicate_key(frame[TEXT])
    frame, dropped = _clean(frame, keys)
    parts = _split(frame, params)
    _check_labels(parts)
    overlap = set(task.duplicate_key(parts["train"][TEXT])) & set(task.duplicate_key(pd.concat([parts["val"], parts["test"]])[TEXT]))
    assert not overlap, f"leakage check failed: {len(overlap)} texts in train and val/test"

    labels = _label_order(parts["train"][LABEL])
    tables = featurize(params, {name: part.reset_index(names="id") for name, part in parts.items()}, labels)
    summary = {"dropped": dict(Counter(dropped["problem"])), "splits": {}, "labels": labels}
    with atomic_path(paths.PREPARED) as folder:
        folder.mkdir()
        for name, table in tables.items():
            table.to_parquet(folder / f"{name}.parquet", index=False)
            lengths = table["input_ids"].map(len)
            summary["splits"][name] = {
                "rows": len(table),
                "augmented_rows": int(table["augmented"].sum()),
                "truncated_rows": int(table["truncated"].sum()),
                "mean_tokens": round(float(lengths.mean()), 1),
                "labels": table[LABEL].map(dict(enumerate(labels))).value_counts().reindex(labels, fill_value=0).to_dict(),
            }
        write_json(folder / "label_map.json", {"labels": labels, "features": feature_columns(tables["train"])})
    write_table(paths.QUARANTINE / "preprocess.csv", dropped[[ROW, LINE, "problem", TEXT, LABEL]])
    write_json(paths.PREPROCESS_SUMMARY, summary)
    sizes = {name: s["rows"] for name, s in summary["splits"].items()}
    print(f"preprocess: splits {sizes}, labels {labels}; dropped {summary['dropped']}")
    return summary


if __name__ == "__main__":
    main(run, __doc__)
