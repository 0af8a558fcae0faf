"""Read a user's table (CSV, TSV, JSONL, Parquet) without losing track of where each row came from.

Policy for undecodable bytes: files are read as UTF-8 (a BOM is allowed). A row holding bytes that
are not valid UTF-8 is a *bad row*, like a row with the wrong number of fields or invalid JSON. Bad
rows are reported by file, data-row number and line, and either stop the run
(`data.on_bad_rows: error`) or go to the quarantine file (`skip`), with the bytes shown as \\xNN.
The standard csv module is used instead of pandas' reader because pandas' C parser rejects the
surrogate-escaped text needed to pin a bad byte to its row, and it would split texts holding bare
carriage returns.
"""
from __future__ import annotations

import codecs
import csv
import io
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from finetune.data import labels as label_kinds
from finetune.errors import UserError

_UNDECODABLE = re.compile("[\udc80-\udcff]")  # bytes kept by errors="surrogateescape"
MAX_FIELD = 256 * 2**20  # characters in one CSV field; Python's default (128 KiB) refuses a long document
ROW = "source_row"  # 1-based data row (header excluded) in the source file
LINE = "source_line"  # 1-based line where the row starts


@dataclass
class BadRow:
    row: int
    line: int
    problem: str
    content: str

    def as_dict(self) -> dict:
        return {ROW: self.row, LINE: self.line, "problem": self.problem, "content": self.content}


def printable(text: str) -> str:
    """Show undecodable bytes as \\xNN so the text can be written back as valid UTF-8."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _decode(path: Path) -> str:
    raw = path.read_bytes()
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8):]
    if not raw.strip():
        raise UserError(f"{path}: the file is empty")
    return raw.decode("utf-8", errors="surrogateescape")


def _read_delimited(path: Path, delimiter: str) -> tuple[pd.DataFrame, list[BadRow]]:
    previous = csv.field_size_limit(MAX_FIELD)
    try:
        return _parse_delimited(path, delimiter)
    except csv.Error as error:  # e.g. a field longer than MAX_FIELD (an unclosed quote swallowing the file)
        raise UserError(f"{path}: not a readable {'CSV' if delimiter == ',' else 'TSV'} file ({error}); check its quoting") from None
    finally:
        csv.field_size_limit(previous)


def _parse_delimited(path: Path, delimiter: str) -> tuple[pd.DataFrame, list[BadRow]]:
    reader = csv.reader(io.StringIO(_decode(path), newline=""), delimiter=delimiter)
    header = next(reader)
    if any(_UNDECODABLE.search(name) for name in header):
        raise UserError(f"{path} line 1: the header holds bytes that are not valid UTF-8; re-save the file as UTF-8")
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise UserError(f"{path} line 1: the header names column(s) {[printable(n)[:80] for n in repeated]} more than once; "
                        "rename them so each column has its own name")
    records, bad = [], []
    line = reader.line_num
    for row_number, fields in enumerate(reader, start=1):
        start, line = line + 1, reader.line_num
        if not fields:
            continue
        content = delimiter.join(fields)
        if len(fields) != len(header):
            bad.append(BadRow(row_number, start, f"expected {len(header)} fields, found {len(fields)}", printable(content)))
        elif _UNDECODABLE.search(content):
            bad.append(BadRow(row_number, start, "holds bytes that are not valid UTF-8", printable(content)))
        else:
            records.append([*fields, row_number, start])
    if not records and not bad:
        raise UserError(f"{path}: the file has a header but no data rows")
    return pd.DataFrame(records, columns=[*header, ROW, LINE]), bad


def _read_jsonl(path: Path) -> tuple[pd.DataFrame, list[BadRow]]:
    records, bad = [], []
    row_number = 0
    for line_number, line in enumerate(_decode(path).splitlines(), start=1):
        if not line.strip():
            continue
        row_number += 1
        if _UNDECODABLE.search(line):
            bad.append(BadRow(row_number, line_number, "holds bytes that are not valid UTF-8", printable(line)))
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            bad.append(BadRow(row_number, line_number, f"not valid JSON ({error.msg})", line))
            continue
        except RecursionError:
            bad.append(BadRow(row_number, line_number, "JSON nested too deeply", line[:200]))
            continue
        if not isinstance(record, dict):
            bad.append(BadRow(row_number, line_number, "expected a JSON object per line", line))
            continue
        records.append({**record, ROW: row_number, LINE: line_number})
    frame = pd.DataFrame(records, dtype=object)  # each cell keeps its JSON type: ints with a gap stay ints, not floats
    return (frame.astype({ROW: int, LINE: int}) if records else frame), bad


def _read_parquet(path: Path) -> tuple[pd.DataFrame, list[BadRow]]:
    try:
        frame = pd.read_parquet(path)
    except Exception as error:  # pyarrow raises several types for corrupt files
        raise UserError(f"{path}: not a readable Parquet file ({error})") from None
    if frame.empty:
        raise UserError(f"{path}: the file has no rows")
    frame[ROW] = range(1, len(frame) + 1)
    frame[LINE] = frame[ROW]  # Parquet has no lines; the row number is the best locator
    return frame, []


READERS = {
    ".csv": lambda path: _read_delimited(path, ","),
    ".tsv": lambda path: _read_delimited(path, "\t"),
    ".jsonl": _read_jsonl,
    ".parquet": _read_parquet,
}


class Table(NamedTuple):
    frame: pd.DataFrame  # the kept columns, every value a text (or None)
    bad: list[BadRow]
    kinds: dict[str, str]  # {label column: the kind of value it held (finetune/data/labels.py)}


def read_table(path: Path, columns: dict[str, str], labels: tuple[str, ...] = ()) -> Table:
    """Read `path` and keep `columns` ({param key: column name}). Every value becomes a text (JSONL/Parquet labels 7, 1.0,
    true become "7", "1", "True"); what the `labels` columns held is their kind, refused when one column mixes kinds."""
    frame, bad = READERS[path.suffix.lower()](path)
    missing = {key: name for key, name in columns.items() if name not in frame.columns}
    if missing:
        found = ", ".join(str(c) for c in frame.columns if c not in (ROW, LINE))
        wanted = "; ".join(f"{key} = {name!r}" for key, name in missing.items())
        raise UserError(f"{path}: missing column(s) {wanted}; columns found: {found}")
    kept = frame[[*columns.values(), ROW, LINE]].copy()
    unusable = {}  # {row: its first unusable cell}
    for name in columns.values():
        for row, line, cell in zip(kept[ROW], kept[LINE], kept[name]):
            what = _not_one_value(cell)
            if what and row not in unusable:
                unusable[row] = BadRow(row, line, f"column {name!r} holds {what}; expected a text or a number", _shown(cell))
    if unusable:
        kept = kept[~kept[ROW].isin(unusable)]
    kinds = {column: label_kinds.kind_of(kept[column], kept[ROW], column, str(path)) for column in labels}
    for name in columns.values():
        kept[name] = kept[name].map(_as_text)
    return Table(kept, sorted([*bad, *unusable.values()], key=lambda bad_row: bad_row.row), kinds)


def _not_one_value(cell) -> str:
    """What a JSONL or Parquet cell holds instead of one text or number ('' if it is one): a list, an object or an
    infinite number would otherwise become a class (or a text) named after its Python repr."""
    if isinstance(cell, dict):
        return "a JSON object"
    if isinstance(cell, (list, tuple, np.ndarray)):
        return "a list"
    if isinstance(cell, float) and math.isinf(cell):
        return "an infinite number"
    return ""


def _shown(cell) -> str:
    return printable(str(cell.tolist() if isinstance(cell, np.ndarray) else cell))[:200]


def _as_text(value) -> str | None:
    if value is None or (isinstance(value, float) and value != value):
        return None
    return label_kinds.name(value)  # a label column read as floats (1.0) stays "1"
