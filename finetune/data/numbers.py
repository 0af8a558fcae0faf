"""Numeric labels (data.label_type number): a score, a rating, a count predicted by a regression head.

The model has one output, trained on the label STANDARDISED with the train split's mean and standard deviation (so a
learning rate and huber_delta mean the same whatever the label's scale) and un-standardised wherever a prediction
leaves the model (evaluate, members, ensemble, predict): every score and file is in the label's own units.
label_map.json: `labels` ["value"] (the one output), `target` {"mean", "std", "column"}; the prepared splits hold the
label as a float in its own units.
Cleaning: a label that is not a number, NaN or infinite is a bad row at ingest (data.on_bad_rows: an error naming the
row, or skip: data/quarantine/ingest.csv with the reason); the same input with two different labels is dropped by
preprocess as for classes. Splits are stratified on the label's quantile bins
(STRATA, fewer on small data), so train, val and test cover the same range.
Baseline: the train mean predicted for every row.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from finetune.errors import UserError

OUTPUT = "value"  # label_map["labels"]: the one output of a regression head
STRATA = 10  # quantile bins the splits are stratified on (at most rows / 3 of them)


def is_number(label_map: dict) -> bool:
    return "target" in label_map


def parse(labels: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(each label as a float, its problem or ""): labels arrive as the names ingest stored ('3.5', '7')."""
    def problem(text) -> str:
        try:
            value = float(str(text).strip())
        except ValueError:
            return f"label {str(text)[:40]!r} is not a number"
        return "label is NaN" if math.isnan(value) else ("label is infinite" if math.isinf(value) else "")

    problems = labels.map(problem)
    values = pd.to_numeric(labels.where(problems == "", "nan").astype(str).str.strip(), errors="coerce")
    return values.astype(np.float64), problems


def strata(values: pd.Series) -> pd.Series:
    """Quantile bins of the labels: what a stratified split of numbers stratifies on (ties share a bin)."""
    bins = max(1, min(STRATA, len(values) // 3))
    return pd.Series(pd.qcut(values.astype(np.float64).rank(method="first"), bins, labels=False), index=values.index).astype(str)


def quantiles(values: pd.Series) -> dict:
    """min, quartiles, max, mean and distinct values of numeric labels (the data profile's and ingest's summary)."""
    if values.empty:
        return {}
    points = values.quantile([0, 0.25, 0.5, 0.75, 1]).to_numpy()
    return {**{name: round(float(v), 6) for name, v in zip(("min", "p25", "median", "p75", "max"), points)},
            "mean": round(float(values.mean()), 6), "distinct": int(values.nunique())}


def target(train: pd.Series, column: str) -> dict:
    """label_map["target"]: the train labels' mean and standard deviation (what the model's output is scaled by)."""
    values = train.to_numpy(dtype=np.float64)
    if len(values) < 2 or not np.ptp(values) > 0:
        raise UserError(f"data.label_type number: the train split's labels (column {column!r}) are all {values[0] if len(values) else 'missing'}; "
                        "a regression head needs labels that vary")
    return {"mean": float(values.mean()), "std": float(values.std()), "column": column}


def standardised(values, label_map: dict) -> np.ndarray:
    spec = label_map["target"]
    return (np.asarray(values, dtype=np.float64) - spec["mean"]) / spec["std"]


def in_units(outputs, label_map: dict) -> np.ndarray:
    """Model outputs (standardised, rows x 1 or rows) as labels in their own units, rows x 1."""
    spec = label_map["target"]
    return np.asarray(outputs, dtype=np.float64).reshape(-1, 1) * spec["std"] + spec["mean"]


def many_values_warning(labels: pd.Series) -> str | None:
    """A category label column that looks like a score: numbers only, many distinct ones (over 20, and over one per 20 rows)."""
    distinct = labels.nunique()
    if distinct > max(20, len(labels) // 20) and (parse(labels)[1] == "").all():
        return (f"the label column holds {distinct:,} distinct numbers in {len(labels):,} rows: if it is a score or a count, "
                "predict it with a regression head (data.label_type number)")
    return None
