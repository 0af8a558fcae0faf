"""Several labels per example (multi-task): one shared model, one classification head per task.

`data.label_columns` names the tasks: {task: column}, or a list of columns, each its own task's name. Without it a run
has one head and everything is exactly what it was (nothing below is used).
Storage: ingest keeps a row's labels as one JSON object in `label` ({"shape": "circle", "colour": null}; null = this row
has no label for that task), so the code that moves rows around (dedup, leakage, splits) works on it as on one label;
splits and samples are stratified on the FIRST task's label. Preprocess stores per row the list of label indices
(IGNORE = missing); label_map.json holds `tasks` ({task: [labels]}) and `labels`: every "task: label" in task order.
Model: the task's own classifier with one output per "task: label". Its last linear layer computes every head at once:
each head's rows of that layer are its own and nothing but the features beneath is shared (two nn.Linear heads would
compute the same numbers), so every model family, strategy, save and reload works unchanged.
Loss: per head, cross-entropy over that head's outputs on the rows that have its label (`ignore_index`: a missing label
contributes exactly nothing, gradient included), averaged over those rows; then the heads combined with
`train.task_weights`: fixed weights (sum_t w_t L_t, default 1 each) or `uncertainty` (Kendall, Gal & Cipolla 2018,
sum_t exp(-s_t) L_t + s_t, with s_t a learned log-variance per task, saved with every checkpoint, reported in train.json).
Metrics: each head's accuracy and macro F1 on its labelled rows (`<task>.accuracy`, `<task>.f1_macro`) and their means
(`accuracy`, `f1_macro`), which early stopping and search select on by default; `<task>.f1_macro` selects on one head.
Ensembles work per head: evaluate and every member save each head's probabilities apart (finetune/probabilities.py
save_heads; a classical member fits one model per head), and the ensemble stage combines each head's on its own.
Explanations too: each head through finetune/head_loss.py's HeadView (the model with that head's logits alone).
Compression: the model is compressed whole (every head); distillation sums each head's loss (the hard term on its
labelled rows, the soft term on every row); the compressed models are scored on every labelled (test row, head) pair
at once (`pooled`: "task: label" classes), the compress stage's one table.
Not yet: per-task label filters (data.keep_labels), MixUp/CutMix (they mix one label).
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from finetune.errors import UserError

IGNORE = -100  # a missing label: PyTorch's cross-entropy ignore_index, also the Trainer's padding value


def encode(frame, columns: dict[str, str]):
    """One JSON object per row from the task columns (missing and blank cells: null)."""
    def value(cell):
        return None if cell is None or (isinstance(cell, float) and np.isnan(cell)) or not str(cell).strip() else str(cell).strip()
    return [json.dumps({task: value(cell) for task, cell in zip(columns, cells)}) for cells in zip(*(frame[c] for c in columns.values()))]


def decode(values) -> list[dict]:
    return [json.loads(value) for value in values]


@dataclass(frozen=True)
class Heads:
    tasks: dict[str, list[str]]  # {task: its labels}, in head order

    @classmethod
    def of(cls, label_map: dict) -> "Heads":
        return cls(label_map.get("tasks") or {})

    @property
    def multi(self) -> bool:
        return bool(self.tasks)

    def matrix(self, labels) -> np.ndarray:
        """Prepared labels (one list of indices per row) as rows x tasks, IGNORE where a row misses that task's label."""
        return np.array(list(labels), dtype=int).reshape(len(labels), len(self.tasks))

    @property
    def sizes(self) -> list[int]:
        return [len(labels) for labels in self.tasks.values()]

    def columns(self, array: np.ndarray) -> dict[str, np.ndarray]:
        """{task: its columns} of a rows x outputs array."""
        bounds = np.cumsum([0, *self.sizes])
        return {task: array[:, start:end] for task, start, end in zip(self.tasks, bounds[:-1], bounds[1:])}

    def softmax(self, logits):
        """Each head's probabilities side by side (one softmax per head), or one softmax for a single head (torch tensors)."""
        import torch

        if not self.multi:
            return torch.softmax(logits, dim=-1)
        return torch.cat([torch.softmax(chunk, dim=-1) for chunk in logits.split(self.sizes, dim=-1)], dim=-1)


def pooled(heads: Heads, labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(actual, predicted, row) over every (row, head) that has a label, as indices into label_map["labels"] ("task:
    label", each head's block of classes), so one-head scoring code (accuracy, macro F1 over every task's classes,
    intervals, paired comparisons) scores a multi-task model; one head: the labels, the argmax and every row."""
    if not heads.multi:
        return labels, probs.argmax(axis=1), np.arange(len(labels))
    labels = heads.matrix(labels)
    offsets = np.cumsum([0, *heads.sizes[:-1]])
    parts = [(labels[:, i] + offset, columns.argmax(axis=1) + offset, np.arange(len(probs)))
             for i, (offset, columns) in enumerate(zip(offsets, heads.columns(probs).values()))]
    kept = [labels[:, i] != IGNORE for i in range(len(heads.tasks))]
    return tuple(np.concatenate([part[j][keep] for part, keep in zip(parts, kept)]) for j in range(3))


def label_map(names: dict[str, list[str]]) -> dict:
    return {"labels": [f"{task}: {label}" for task, labels in names.items() for label in labels], "tasks": names}


def indices(labels: list[dict], names: dict[str, list[str]]) -> list[list[int]]:
    """Each row's label index per task (IGNORE where missing)."""
    index = {task: {label: i for i, label in enumerate(values)} for task, values in names.items()}
    return [[IGNORE if row[task] is None else index[task][row[task]] for task in names] for row in labels]


def head_metrics(heads: Heads, logits: np.ndarray, labels: np.ndarray, score) -> dict[str, float]:
    """`score(actual, predicted)` ({name: value}) per head on its labelled rows as `<task>.<name>`, and the means."""
    result, per_name = {}, {}
    for i, (task, columns) in enumerate(heads.columns(logits).items()):
        kept = labels[:, i] != IGNORE
        for name, value in score(labels[kept, i], columns[kept].argmax(axis=1)).items():
            result[f"{task}.{name}"] = value
            per_name.setdefault(name, []).append(value)
    return {**{name: float(np.mean(values)) for name, values in per_name.items()}, **result}


def first_label(values: pd.Series) -> pd.Series:
    """Each row's first-task label ("(missing)" where it has none): what multi-task splits and samples stratify on."""
    return pd.Series([next(iter(row.values())) or "(missing)" for row in decode(values)], index=values.index)


def label_counts(values: pd.Series) -> dict[str, dict[str, int]]:
    """{task: {label: rows}} (missing labels not counted)."""
    rows = pd.DataFrame(decode(values), index=values.index)
    return {task: rows[task].dropna().value_counts().sort_index().to_dict() for task in rows.columns}


def check_every_task_labelled(values: pd.Series, tasks: dict[str, str], where: str) -> None:
    """Every task needs labelled rows in `where` (a table, a split): a head with none cannot learn or be scored."""
    counts = label_counts(values) if len(values) else {}
    empty = [f"{task} (column {column!r})" for task, column in tasks.items() if not counts.get(task)]
    if empty:
        raise UserError(f"{where}: no row has a label for task(s) {', '.join(empty)}; check data.label_columns and the data")


def split_counts(values: pd.Series, labels: list[str] | dict[str, list[str]]) -> dict:
    """Rows per label of a prepared split (label indices); with several tasks {task: {label: rows}}, missing not counted."""
    if not isinstance(labels, dict):
        return values.map(dict(enumerate(labels))).value_counts().reindex(labels, fill_value=0).to_dict()
    matrix = np.array(values.tolist(), dtype=int).reshape(len(values), len(labels))
    return {task: {label: int((matrix[:, i] == j).sum()) for j, label in enumerate(names)} for i, (task, names) in enumerate(labels.items())}


def names(label_map: dict) -> list[str] | dict[str, list[str]]:
    """What label_map.json's labels are, as featurize takes them: a list, or {task: labels}."""
    return label_map.get("tasks") or label_map["labels"]


def target(value) -> int | list[int]:
    """A dataset item's `labels`: the class index, or one per task (a prepared list, read back as an array)."""
    return int(value) if np.ndim(value) == 0 else [int(v) for v in value]
