"""Several label columns per example: one shared model, one classification HEAD per label column.

`data.label_columns` names the heads: {head: column}, or a list of columns, each its own head's name. ("task" is only
ever params.yaml's `task`, the kind of model; a head is one label column of it.) Without label_columns a run has one
head and everything is exactly what it was (nothing below is used).
Storage: ingest keeps a row's labels as one JSON object in `label` ({"shape": "circle", "colour": null}; null = this row
has no label for that head), so the code that moves rows around (dedup, leakage, splits) works on it as on one label;
splits and samples are stratified on the FIRST head's label. Preprocess stores per row the list of label indices
(IGNORE = missing); label_map.json holds `heads` ({head: [classes]}) and `labels`: every "head: class" in head order.
Model: the task's own classifier with one output per "head: class". Its last linear layer computes every head at once:
each head's rows of that layer are its own and nothing but the features beneath is shared (two nn.Linear heads would
compute the same numbers), so every model family, strategy, save and reload works unchanged.
Loss (finetune/training/head_loss.py): per head, cross-entropy over that head's outputs on the rows that have its label
(`ignore_index`: a missing label contributes exactly nothing, gradient included), averaged over those rows; then the
heads combined with `train.head_weights`: fixed weights (sum_h w_h L_h, default 1 each) or `uncertainty` (Kendall, Gal &
Cipolla 2018, sum_h exp(-s_h) L_h + s_h, with s_h a learned log-variance per head, saved with every checkpoint, reported
in train.json).
Metrics: each head's accuracy and macro F1 on its labelled rows (`<head>.accuracy`, `<head>.f1_macro`) and their means
(`accuracy`, `f1_macro`), which early stopping and search select on by default; `<head>.f1_macro` selects on one head.
The classification family (finetune/families/classification/) does everything per head: evaluate and every member save
each head's probabilities apart (a classical member fits one model per head), the ensemble combines each head's on its
own, explanations go through HeadView (the model with one head's logits alone). Compression: the model is compressed
whole; distillation sums each head's loss (the hard term on its labelled rows, the soft term on every row); the
compressed models are scored on every labelled (test row, head) pair at once (`pooled`: "head: class" classes).
Number heads (data.number_heads): a head whose label is a number is one output ("head: value") trained with the squared
error of its label standardised by the train mean and std (label_map `targets`), stored as a float (NaN = missing, so
the prepared label lists are floats); everywhere else it is what a numeric label is (finetune/data/numbers.py): its
`probabilities` column is its prediction in its units, scored by rmse, mae, r2, spearman; the means are the class heads'.
Not yet: per-head label filters (data.keep_labels), MixUp/CutMix (they mix one label).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from finetune.errors import UserError

IGNORE = -100  # a missing label: PyTorch's cross-entropy ignore_index, also the Trainer's padding value


def encode(frame, columns: dict[str, str]):
    """One JSON object per row from the label columns ({head: column}; missing and blank cells: null)."""
    def value(cell):
        return None if cell is None or (isinstance(cell, float) and np.isnan(cell)) or not str(cell).strip() else str(cell).strip()
    return [json.dumps({head: value(cell) for head, cell in zip(columns, cells)}) for cells in zip(*(frame[c] for c in columns.values()))]


def decode(values) -> list[dict]:
    return [json.loads(value) for value in values]


@dataclass(frozen=True)
class Heads:
    classes: dict[str, list[str]]  # {head: its classes}, in head order; {} = one head (label_map["labels"]); a number head's: ["value"]
    targets: dict[str, dict] = field(default_factory=dict)  # the number heads' train mean, std and column (finetune/data/numbers.py)

    @classmethod
    def of(cls, label_map: dict) -> "Heads":
        return cls(label_map.get("heads") or {}, label_map.get("targets") or {})

    @property
    def multi(self) -> bool:
        return bool(self.classes)

    def matrix(self, labels) -> np.ndarray:
        """Prepared labels (one list per row) as rows x heads: class indices, IGNORE where a row misses that head's label;
        with number heads floats, a number head's value in its units and NaN where missing."""
        return np.array(list(labels), dtype=np.float64 if self.targets else int).reshape(len(labels), len(self.classes))

    def labelled(self, column: np.ndarray, head: str) -> np.ndarray:
        """The rows of one head's matrix column that have its label."""
        return ~np.isnan(column) if head in self.targets else column != IGNORE

    def target_of(self, head: str) -> dict | None:
        return self.targets.get(head)

    @property
    def sizes(self) -> list[int]:
        return [len(labels) for labels in self.classes.values()]

    def columns(self, array: np.ndarray) -> dict[str, np.ndarray]:
        """{head: its columns} of a rows x outputs array."""
        bounds = np.cumsum([0, *self.sizes])
        return {head: array[:, start:end] for head, start, end in zip(self.classes, bounds[:-1], bounds[1:])}

    def softmax(self, logits):
        """Each head's outputs side by side (torch tensors): a class head's probabilities (one softmax per head), a number
        head's prediction in its units; one softmax for a single head."""
        import torch

        if not self.multi:
            return torch.softmax(logits, dim=-1)
        return torch.cat([chunk * self.targets[head]["std"] + self.targets[head]["mean"] if head in self.targets else torch.softmax(chunk, dim=-1)
                          for head, chunk in zip(self.classes, logits.split(self.sizes, dim=-1))], dim=-1)

    def logits(self, outputs: np.ndarray) -> np.ndarray:
        """Outputs (rows x outputs, as `softmax` gives them) back as logits: a class head's log-probabilities, a number
        head's standardised prediction (what a distilled student learns)."""
        return np.concatenate([(part - self.targets[head]["mean"]) / self.targets[head]["std"] if head in self.targets
                               else np.log(np.clip(part, 1e-12, 1)) for head, part in self.columns(outputs).items()], axis=1)


def pooled(heads: Heads, labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(actual, predicted, row) over every (row, head) that has a label, as indices into label_map["labels"] ("head:
    class", each head's block of classes), so one-head scoring code (accuracy, macro F1 over every head's classes,
    intervals, paired comparisons) scores a model of several heads; one head: the labels, the argmax and every row."""
    if not heads.multi:
        return labels, probs.argmax(axis=1), np.arange(len(labels))
    labels = heads.matrix(labels)
    offsets = np.cumsum([0, *heads.sizes[:-1]])
    classed = [i for i, head in enumerate(heads.classes) if head not in heads.targets]  # number heads: scored apart (number_predictions)
    parts = [(labels[:, i].astype(int) + offsets[i], columns.argmax(axis=1) + offsets[i], np.arange(len(probs)))
             for i, columns in enumerate(heads.columns(probs).values()) if i in classed]
    kept = [labels[:, i] != IGNORE for i in classed]
    return tuple(np.concatenate([part[j][keep] for part, keep in zip(parts, kept)]) for j in range(3))


def number_predictions(heads: Heads, labels, outputs: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{number head: (actual, predicted)} on the rows that have its label, both in its units."""
    matrix, columns = heads.matrix(labels), heads.columns(outputs)
    return {head: (matrix[heads.labelled(matrix[:, i], head), i], columns[head][heads.labelled(matrix[:, i], head), 0])
            for i, head in enumerate(heads.classes) if head in heads.targets}


def label_map(names: dict[str, list[str]], targets: dict[str, dict] | None = None) -> dict:
    return {"labels": [f"{head}: {label}" for head, labels in names.items() for label in labels], "heads": names,
            **({"targets": targets} if targets else {})}


def indices(labels: list[dict], names: dict[str, list[str]], targets: dict | None = None) -> list[list]:
    """Each row's label index per head (IGNORE where missing); a number head's value as a float (NaN where missing)."""
    index = {head: {label: i for i, label in enumerate(values)} for head, values in names.items()}
    targets = targets or {}

    def one(row, head):
        if head in targets:
            return float("nan") if row[head] is None else float(row[head])
        return IGNORE if row[head] is None else index[head][row[head]]
    return [[one(row, head) for head in names] for row in labels]


def head_metrics(heads: Heads, logits: np.ndarray, labels: np.ndarray, score, score_numbers=None) -> dict[str, float]:
    """`score(actual, predicted)` ({name: value}) per class head on its labelled rows as `<head>.<name>`, and the means over
    the class heads; a number head's `score_numbers(actual, predicted)` in its units (its logits are standardised)."""
    result, per_name = {}, {}
    for i, (head, columns) in enumerate(heads.columns(logits).items()):
        kept = heads.labelled(labels[:, i], head)
        if head in heads.targets:
            target = heads.targets[head]
            result |= {f"{head}.{name}": value for name, value in
                       score_numbers(labels[kept, i], columns[kept, 0] * target["std"] + target["mean"]).items()}
            continue
        for name, value in score(labels[kept, i].astype(int), columns[kept].argmax(axis=1)).items():
            result[f"{head}.{name}"] = value
            per_name.setdefault(name, []).append(value)
    return {**{name: float(np.mean(values)) for name, values in per_name.items()}, **result}


def first_label(values: pd.Series, number_heads=()) -> pd.Series:
    """Each row's first class head's label ("(missing)" where it has none): what splits and samples stratify on with
    several heads."""
    return pd.Series([next(label for head, label in row.items() if head not in number_heads) or "(missing)" for row in decode(values)],
                     index=values.index)


def label_counts(values: pd.Series, number_heads=()) -> dict[str, dict]:
    """{head: {label: rows}} (missing labels not counted); a number head's quantiles (finetune/data/numbers.py)."""
    from finetune.data import numbers

    rows = pd.DataFrame(decode(values), index=values.index)
    return {head: numbers.quantiles(numbers.parse(rows[head].dropna())[0]) if head in number_heads else
            rows[head].dropna().value_counts().sort_index().to_dict() for head in rows.columns}


def label_summary(values: pd.Series, data) -> dict:
    """ingest.json's `labels`: rows per label ({head: {label: rows}} with several heads); a numeric label's quantiles."""
    from finetune.config.sections import label_columns
    from finetune.data import numbers

    if data.label_type == "number":
        parsed, problems = numbers.parse(values)
        return {"numbers": int((problems == "").sum()), "not numbers": int((problems != "").sum()), **numbers.quantiles(parsed[problems == ""])}
    return label_counts(values, data.number_heads) if label_columns(data) else values.value_counts().sort_index().to_dict()


def check_every_head_labelled(values: pd.Series, columns: dict[str, str], where: str) -> None:
    """Every head needs labelled rows in `where` (a table, a split): a head with none cannot learn or be scored."""
    counts = label_counts(values) if len(values) else {}
    empty = [f"{head} (column {column!r})" for head, column in columns.items() if not counts.get(head)]
    if empty:
        raise UserError(f"{where}: no row has a label for head(s) {', '.join(empty)}; check data.label_columns and the data")


def split_counts(values: pd.Series, labels: list[str] | dict[str, list[str]], targets: dict | None = None) -> dict:
    """Rows per label of a prepared split (label indices); with several heads {head: {label: rows}}, missing not counted,
    a number head's quantiles."""
    from finetune.data import numbers

    if not isinstance(labels, dict):
        return values.map(dict(enumerate(labels))).value_counts().reindex(labels, fill_value=0).to_dict()
    heads = Heads(labels, targets or {})
    matrix = heads.matrix(values.tolist())
    return {head: numbers.quantiles(pd.Series(matrix[:, i]).dropna()) if head in heads.targets else
            {label: int((matrix[:, i] == j).sum()) for j, label in enumerate(names)} for i, (head, names) in enumerate(labels.items())}


def names(label_map: dict) -> list[str] | dict[str, list[str]]:
    """What label_map.json's labels are, as featurize takes them: a list, or {head: labels}."""
    return label_map.get("heads") or label_map["labels"]


def target(value) -> int | float | list[int]:
    """A dataset item's `labels`: the class index, a numeric label (a float, finetune/data/numbers.py), or one class index
    per head (a prepared list, read back as an array)."""
    if np.ndim(value) == 0:
        return float(value) if isinstance(value, (float, np.floating)) else int(value)
    if np.asarray(value).dtype.kind == "f":  # number heads among the heads: every head's label as a float (NaN: missing)
        return [float(v) for v in value]
    return [int(v) for v in value]


@dataclass(frozen=True)
class Head:
    """One head's view of rows scored by a model of label_map: its name (None: the only head), classes, the rows that
    have its label (`labelled`, a mask), their class indices and its columns of the probabilities."""
    name: str | None
    classes: list[str]
    labelled: np.ndarray
    actual: np.ndarray
    probs: np.ndarray  # a number head's: rows x 1 predictions in its units
    target: dict | None = None  # a number head's train mean, std and column

    @property
    def label_map(self) -> dict:
        """This head alone as a one-label label_map (a number head's with its `target`): what one-label code takes."""
        return {"labels": self.classes, **({"target": self.target} if self.target else {})}

    def folder(self, root):
        """Where this head's files go: root itself for the only head, root/<head> for one of several."""
        return root if self.name is None else root / self.name


def each_head(label_map: dict, labels, probs: np.ndarray) -> list[Head]:
    """Every head of label_map on these rows (prepared labels, rows x outputs probabilities): the one head, or each of several."""
    heads = Heads.of(label_map)
    if not heads.multi:
        labels = np.asarray(labels)
        return [Head(None, label_map["labels"], np.ones(len(labels), dtype=bool), labels, probs)]
    matrix, found = heads.matrix(labels), []
    for i, (name, columns) in enumerate(heads.columns(probs).items()):
        kept = heads.labelled(matrix[:, i], name)
        actual = matrix[kept, i] if name in heads.targets else matrix[kept, i].astype(int)
        found.append(Head(name, heads.classes[name], kept, actual, columns[kept], heads.target_of(name)))
    return found


def combined(results: dict[str | None, dict], **extra) -> dict:
    """One head's result as it is; several heads' as the class heads' mean accuracy and macro F1, each head's under `heads`."""
    if list(results) == [None]:
        return results[None]
    classed = [r for r in results.values() if "f1_macro" in r]
    return {"accuracy": float(np.mean([r["accuracy"] for r in classed])),
            "f1_macro": float(np.mean([r["f1_macro"] for r in classed])), "heads": results, **extra}


def unlabelled(values: pd.Series, columns: dict[str, str]) -> pd.Series:
    """Per row, "empty label" (several heads: "empty labels", when it has none at all) or "": a row missing only some
    heads' labels still trains the others."""
    if columns:
        empty = pd.Series([not any(row.values()) for row in decode(values)], index=values.index, dtype=bool)
    else:
        empty = values.isna() | (values.astype(str).str.strip() == "")
    return empty.map({True: "empty label" + ("s" if columns else ""), False: ""})


def number_problems(values: pd.Series, number_heads: list[str]) -> pd.Series:
    """Per row, why a number head's label is no number ("head confidence: label 'high' is not a number") or "" (a missing
    label is fine: that head just does not learn from the row)."""
    from finetune.data import numbers

    rows = pd.DataFrame(decode(values), index=values.index)
    found = pd.Series("", index=values.index)
    for head in number_heads:
        present = rows[head].notna()
        problems = numbers.parse(rows.loc[present, head])[1]
        found[problems.index] = found[problems.index].where(problems == "", f"head {head}: " + problems)
    return found


def strata(values: pd.Series, data) -> pd.Series:
    """What splits and samples stratify on: the label, with several heads the first head's (first_label), a numeric label's
    quantile bin (finetune/data/numbers.py; a label that is no number gets a bin of its own, preprocess drops it)."""
    from finetune.config.sections import label_columns
    from finetune.data import numbers

    if data.label_type == "number":
        parsed, problems = numbers.parse(values)
        return numbers.strata(parsed[problems == ""]).reindex(values.index, fill_value="not a number")
    return first_label(values, data.number_heads) if label_columns(data) else values
