"""ingest: read `data.source` through the task, keep the wanted labels and confident rows, subsample.

The task reads its builtin sources or the user's files (text: CSV, TSV, JSONL, Parquet; images: a
folder of class folders or a table of image paths) and checks every input (images: decodable, not a
decompression bomb...). Rows it cannot use are bad rows: they stop the run (data.on_bad_rows: error,
naming the file and row) or go to the quarantine with their reason (skip).
Several label columns (data.label_columns, finetune/data/heads.py): `label` holds each row's labels as one JSON object; a
row with none is a bad row, a head with none in the whole table an error; samples are stratified on the first head.
Writes data/ingested.parquet (input, label[, split], source_row, source_line, origin), the refused rows
in data/quarantine/ingest.csv, and counts of everything kept, dropped or ignored in reports/ingest.json.
"""
from __future__ import annotations

from collections import Counter

import pandas as pd
from sklearn.model_selection import train_test_split

from finetune import paths
from finetune.config.params import Params
from finetune.config.sections import label_columns
from finetune.data import heads, labels, numbers
from finetune.data.sources import CONFIDENCE, INPUT, LABEL, ORIGIN, SPLIT
from finetune.data.tables import LINE, ROW, BadRow
from finetune.errors import UserError
from finetune.io import write_json, write_outputs, write_table
from finetune.stage import main
from finetune.tasks import get_task

SPLIT_NAMES = ("train", "val", "test")


def _refuse(frame: pd.DataFrame, problems: pd.Series, shown: pd.Series, bad: list[BadRow]) -> pd.DataFrame:
    """Move the rows with a problem ("" = none) into `bad`; `shown` says what each row was."""
    refused = problems != ""
    for index in frame.index[refused]:
        bad.append(BadRow(frame.at[index, ROW], frame.at[index, LINE], problems[index], f"{frame.at[index, LABEL]!s}\t{shown[index]!s}"))
    return frame[~refused]


def _subsample(frame: pd.DataFrame, max_rows: int, seed: int, data) -> pd.DataFrame:
    strata = heads.strata(frame[LABEL], data)
    counts = strata.value_counts()
    stratify = strata if counts.min() >= 2 else None  # a singleton class cannot be stratified
    try:
        kept, _ = train_test_split(frame, train_size=max_rows, stratify=stratify, random_state=seed)
    except ValueError as error:  # e.g. fewer rows to keep than labels: a stratified sample cannot hold them all
        raise UserError(f"data.max_rows {max_rows}: cannot take a stratified sample of {len(frame)} rows with "
                        f"{len(counts)} labels ({error})") from None
    return kept.sort_values(ROW, kind="stable")


def _commonest(dropped: Counter, shown: int = 3) -> str:
    """The commonest reasons rows were dropped, at most `shown`: a folder of 37 files each refused for one cause, its
    path in each reason, would otherwise be an error of 37 sentences."""
    reasons = [f"{n} x {reason}" for reason, n in dropped.most_common() if n]
    more = len(reasons) - shown
    return "; ".join(reasons[:shown]) + (f"; and {more} more reason(s)" if more > 0 else "")


def _limit(frame: pd.DataFrame, data, origin: str, dropped: Counter) -> pd.DataFrame:
    """data.max_rows: a sample of the whole table, or of each split the data comes with."""
    if isinstance(data.max_rows, int):
        if len(frame) > data.max_rows:
            dropped[f"not sampled (max_rows={data.max_rows})"] = len(frame) - data.max_rows
            frame = _subsample(frame, data.max_rows, data.seed, data)
        return frame
    if SPLIT not in frame:
        raise UserError(f"data.max_rows {data.max_rows} caps each split, but {origin} comes without one; set data.split_column, "
                        "or give max_rows as one number")
    parts = []
    for name, part in frame.groupby(SPLIT, sort=False):
        cap = data.max_rows.get(name)
        if cap is not None and len(part) > cap:
            dropped[f"not sampled ({name} max_rows={cap})"] = len(part) - cap
            part = _subsample(part, cap, data.seed, data)
        parts.append(part)
    return pd.concat(parts)


def run(params: Params) -> dict:
    data, task = params.data, get_task(params.task)
    source = task.read(data)
    frame, bad = source.frame, list(source.bad)
    rows_read = len(frame) + len(bad)
    frame = frame.reset_index(drop=True)
    shown = task.display(frame)
    several = label_columns(data)  # {head: column}; {} = one label
    frame = _refuse(frame, heads.unlabelled(frame[LABEL], several), shown, bad)
    frame[LABEL] = frame[LABEL].astype(str).str.strip()
    if data.label_type == "number":  # a label that is no number, NaN or infinite: a bad row like an empty one
        frame = _refuse(frame, numbers.parse(frame[LABEL])[1], shown, bad)
    if data.number_heads:  # the same for a number head's label, where the row has one
        frame = _refuse(frame, heads.number_problems(frame[LABEL], data.number_heads), shown, bad)
    if SPLIT in frame:
        wrong = ~frame[SPLIT].isin(SPLIT_NAMES)
        frame = _refuse(frame, wrong.map({True: f"{data.split_column} is not one of {SPLIT_NAMES}", False: ""}), shown, bad)
    stored, problems = task.check_inputs(frame[INPUT], data)
    frame = _refuse(frame.assign(**{INPUT: stored}), problems, shown, bad)
    if bad and data.on_bad_rows == "error":
        first = sorted(bad, key=lambda b: b.row)[0]
        line = "" if first.line is None else f" (line {first.line})"  # a folder's documents have no lines
        raise UserError(
            f"{source.origin} row {first.row}{line}: {first.problem}; {len(bad)} bad row(s) in all. "
            "Fix the file, or set data.on_bad_rows: skip to drop them into data/quarantine/ingest.csv"
        )

    dropped = Counter({f"bad row: {problem}": n for problem, n in Counter(b.problem for b in bad).items()})
    if data.min_confidence is not None:
        confidence = pd.to_numeric(frame[CONFIDENCE] if CONFIDENCE in frame else pd.Series(index=frame.index, dtype=float), errors="coerce")
        low = ~(confidence >= data.min_confidence)  # a missing confidence counts as low
        dropped[f"confidence below {data.min_confidence} or missing"] = int(low.sum())
        frame = frame[~low]
    if data.keep_labels is not None:
        wanted = [labels.name(value) for value in data.keep_labels]
        unknown = sorted(set(wanted) - set(frame[LABEL]))
        if unknown:
            found = ", ".join(sorted(frame[LABEL].unique()))
            raise UserError(f"data.keep_labels: {unknown} not found in {source.origin}; labels found: {found}")
        other = ~frame[LABEL].isin(wanted)
        dropped["label not in keep_labels"] = int(other.sum())
        frame = frame[~other]
    if data.max_rows is not None:
        frame = _limit(frame, data, source.origin, dropped)
    if frame.empty:
        raise UserError(f"{source.origin}: no rows left after filtering: {_commonest(dropped)}")
    if several:
        heads.check_every_head_labelled(frame[LABEL], several, source.origin)

    columns = [INPUT, LABEL, *([SPLIT] if SPLIT in frame else []), ROW, LINE, ORIGIN]
    quarantine = pd.DataFrame([b.as_dict() for b in sorted(bad, key=lambda b: b.row)], columns=[ROW, LINE, "problem", "content"])
    summary = {
        "source": data.source,
        "rows_read": rows_read,
        "rows_kept": len(frame),
        "dropped": {reason: n for reason, n in dropped.items() if n},
        **({"ignored": source.ignored} if source.ignored else {}),
        **({"labels": heads.label_summary(frame[LABEL], data)} if task.has_labels else {"documents": len(frame)}),
    }
    with write_outputs(paths.INGESTED, paths.QUARANTINE / "ingest.csv", paths.INGEST_SUMMARY) as (ingested, quarantined, report):
        write_table(ingested, frame[columns].reset_index(drop=True))
        labels.write_kinds(ingested, source.kinds)  # what the labels were, for predict to answer in the same kind
        write_table(quarantined, quarantine)
        write_json(report, summary)
    print(f"ingest: kept {len(frame)} of {rows_read} rows from {source.origin}; dropped {summary['dropped']}")
    return summary


if __name__ == "__main__":
    main(run, __doc__)
