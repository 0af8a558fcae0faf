"""ingest: read `data.source`, keep the wanted labels and confident rows, subsample, normalise.

Reads the builtin tweets / Chinese reviews or the user's CSV, TSV, JSONL or Parquet file.
Writes data/ingested.parquet (text, label[, split], source_row, source_line), the rows it refused
in data/quarantine/ingest.csv, and counts of everything kept or dropped in reports/ingest.json.
"""
from __future__ import annotations

from collections import Counter

import pandas as pd
from sklearn.model_selection import train_test_split

from finetune import paths
from finetune.cli import main
from finetune.errors import UserError
from finetune.io import write_json, write_table
from finetune.params import Params
from finetune.sources import CONFIDENCE, LABEL, SPLIT, TEXT, load_source
from finetune.tables import LINE, ROW, BadRow

SPLIT_NAMES = ("train", "val", "test")


def _refuse(frame: pd.DataFrame, mask: pd.Series, problem: str, bad: list[BadRow]) -> pd.DataFrame:
    for _, row in frame[mask].iterrows():
        bad.append(BadRow(row[ROW], row[LINE], problem, f"{row[LABEL]!s}\t{row[TEXT]!s}"))
    return frame[~mask]


def _subsample(frame: pd.DataFrame, max_rows: int, seed: int) -> pd.DataFrame:
    counts = frame[LABEL].value_counts()
    stratify = frame[LABEL] if counts.min() >= 2 else None  # a singleton class cannot be stratified
    kept, _ = train_test_split(frame, train_size=max_rows, stratify=stratify, random_state=seed)
    return kept.sort_values(ROW)


def run(params: Params) -> dict:
    data = params.data
    frame, bad, origin = load_source(data)
    rows_read = len(frame) + len(bad)
    frame = _refuse(frame, frame[LABEL].isna() | (frame[LABEL].str.strip() == ""), "empty label", bad)
    frame[LABEL] = frame[LABEL].str.strip()
    if SPLIT in frame:
        frame = _refuse(frame, ~frame[SPLIT].isin(SPLIT_NAMES), f"{data.split_column} is not one of {SPLIT_NAMES}", bad)
    if bad and data.on_bad_rows == "error":
        first = sorted(bad, key=lambda b: b.row)[0]
        raise UserError(
            f"{origin} row {first.row} (line {first.line}): {first.problem}; {len(bad)} bad row(s) in all. "
            "Fix the file, or set data.on_bad_rows: skip to drop them into data/quarantine/ingest.csv"
        )

    dropped = Counter({f"bad row: {problem}": n for problem, n in Counter(b.problem for b in bad).items()})
    if data.min_confidence is not None:
        confidence = pd.to_numeric(frame[CONFIDENCE], errors="coerce")
        low = ~(confidence >= data.min_confidence)  # a missing confidence counts as low
        dropped[f"confidence below {data.min_confidence} or missing"] = int(low.sum())
        frame = frame[~low]
    if data.keep_labels is not None:
        unknown = sorted(set(data.keep_labels) - set(frame[LABEL]))
        if unknown:
            found = ", ".join(sorted(frame[LABEL].unique()))
            raise UserError(f"data.keep_labels: {unknown} not found in {origin}; labels found: {found}")
        other = ~frame[LABEL].isin(data.keep_labels)
        dropped["label not in keep_labels"] = int(other.sum())
        frame = frame[~other]
    if data.max_rows is not None and len(frame) > data.max_rows:
        dropped[f"not sampled (max_rows={data.max_rows})"] = len(frame) - data.max_rows
        frame = _subsample(frame, data.max_rows, data.seed)
    if frame.empty:
        raise UserError(f"{origin}: no rows left after filtering ({dict(dropped)})")

    columns = [TEXT, LABEL, *([SPLIT] if SPLIT in frame else []), ROW, LINE]
    write_table(paths.INGESTED, frame[columns].reset_index(drop=True))
    quarantine = pd.DataFrame([b.as_dict() for b in sorted(bad, key=lambda b: b.row)], columns=[ROW, LINE, "problem", "content"])
    write_table(paths.QUARANTINE / "ingest.csv", quarantine)
    summary = {
        "source": data.source,
        "rows_read": rows_read,
        "rows_kept": len(frame),
        "dropped": {reason: n for reason, n in dropped.items() if n},
        "labels": frame[LABEL].value_counts().sort_index().to_dict(),
    }
    write_json(paths.INGEST_SUMMARY, summary)
    print(f"ingest: kept {len(frame)} of {rows_read} rows from {origin}; dropped {summary['dropped']}")
    return summary


if __name__ == "__main__":
    main(run, __doc__)
