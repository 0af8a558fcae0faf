"""Labels are data: the one codec between a label column's values and the class NAMES every stage works with.

Inside the pipeline a class is a name (text): label_map.json, metrics, confusion matrices, predictions.csv. A name is
the value as written (CSV cells are texts: '007' and '7' are two classes; 'N/A' is a class, not a missing value) or the
text of a JSONL/Parquet value (7 -> '7', 1.0 -> '1', true -> 'True'). What the names were is the column's KIND, decided
at ingest from the values themselves and kept to the end (data/ingested.parquet's metadata, then label_map.json
`kinds`), so predict and serve answer with the user's own values: 7, not '7'; true, not 'True'.
A column mixing kinds (JSONL 7 and "7", or 1 and "other", or true and 1) is refused, naming a row of each: two
values with one name would silently become one class.
Reading our own CSVs back goes through `read_labelled_csv`: pandas would re-type '007' as 7 and read 'N/A' as missing.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from finetune.errors import UserError

TEXT, INTEGER, NUMBER, BOOLEAN = "text", "integer", "number", "boolean"
METADATA_KEY = b"finetune.label_kinds"  # in data/ingested.parquet's schema metadata: {head or "label": kind}
_NOUNS = {TEXT: "texts", INTEGER: "numbers", NUMBER: "numbers", BOOLEAN: "booleans"}


def _kind(cell) -> str | None:
    if cell is None or (isinstance(cell, float) and math.isnan(cell)):
        return None
    if isinstance(cell, (bool, np.bool_)):
        return BOOLEAN
    if isinstance(cell, (int, np.integer)):
        return INTEGER
    if isinstance(cell, (float, np.floating)):
        return INTEGER if float(cell).is_integer() else NUMBER
    return TEXT


def kind_of(cells, rows, column: str, where: str) -> str:
    """The kind of one label column's cells (missing ones skipped; `rows` numbers them for the message); TEXT when empty.
    Whole and fractional numbers are one kind (NUMBER); any other mixture is a UserError naming a row of each kind."""
    first: dict[str, tuple[int, object]] = {}
    for row, cell in zip(rows, cells):
        kind = _kind(cell)
        if kind is not None and kind not in first:
            first[kind] = (row, cell)
    if len({_NOUNS[kind] for kind in first}) > 1:
        shown = "; ".join(f"{_NOUNS[kind]} (row {row}: {json.dumps(cell, default=str)})" for kind, (row, cell) in first.items())
        raise UserError(f"{where}: column {column!r} mixes {shown}; a label column holds one kind of value, as a value "
                        "and its text would otherwise become one class: write every label as a text (\"7\") or every one as a number (7)")
    if NUMBER in first:
        return NUMBER
    return next(iter(first), TEXT)


def name(value) -> str:
    """A value's class name: the text as written, a whole number without its '.0' (a column read as floats), True/False."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def value(name: str, kind: str):
    """The user's value behind a class name (what predict answers): name(value(n, kind)) == n for every kind."""
    if kind == INTEGER:
        return int(name)
    if kind == NUMBER:
        return float(name)
    if kind == BOOLEAN:
        return name == "True"
    return name


def values(names, kind: str) -> list:
    return [value(name, kind) for name in names]


def write_kinds(path: Path, kinds: dict[str, str]) -> None:
    """Record the label columns' kinds in a Parquet file's schema metadata (the file is rewritten in place)."""
    table = pq.read_table(path)
    pq.write_table(table.replace_schema_metadata({**(table.schema.metadata or {}), METADATA_KEY: json.dumps(kinds).encode()}), path)


def read_kinds(path: Path) -> dict[str, str]:
    """{head or "label": kind} from write_kinds; {} for a file written without (every label a text)."""
    recorded = (pq.read_schema(path).metadata or {}).get(METADATA_KEY)
    return json.loads(recorded) if recorded else {}


def read_labelled_csv(path: Path) -> pd.DataFrame:
    """One of the pipeline's own CSVs (predictions, misclassified, changes) with its class columns (actual, predicted,
    *_predicted) as the names written: '007' stays '007', 'N/A' and 'None' stay classes. Other columns as pandas reads them."""
    header = pd.read_csv(path, nrows=0).columns
    names = [column for column in header if column in ("actual", "predicted", "label") or column.endswith("_predicted")]
    return pd.read_csv(path, dtype=dict.fromkeys(names, str), keep_default_na=False, na_values={c: [""] for c in header if c not in names})
