"""Class probabilities of one ensemble member on val and test, saved so the ensemble stage reruns
in seconds without retraining anybody. One parquet per member: columns split, id, label (int),
then prob_<label name> per class in label-map order (so members of other label maps are detected). A numeric label's
member (finetune/data/numbers.py): label (float) and `prediction`, both in the label's units; its `classes` are ["value"]."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from finetune import paths
from finetune.config.sections import PRIMARY
from finetune.data import numbers
from finetune.data.heads import each_head
from finetune.errors import UserError
from finetune.io import write_table

SPLITS = ("val", "test")
PREDICTION = "prediction"  # a numeric label's column


@dataclass(frozen=True)
class Split:
    ids: np.ndarray
    labels: np.ndarray
    probs: np.ndarray  # rows x classes


@dataclass(frozen=True)
class MemberProbabilities:
    name: str
    classes: list[str]
    splits: dict[str, Split]


def save_heads(path: Path, label_map: dict, splits: dict[str, Split]) -> None:
    """save() for a model of label_map: one file, or with several heads (finetune/data/heads.py) one per head, in
    path's folder/<head>/, each holding only the rows that have that head's label."""
    per_split = {name: {head.name: head for head in each_head(label_map, part.labels, part.probs)} for name, part in splits.items()}
    for head in per_split["test"].values():
        parts = {name: Split(splits[name].ids[heads[head.name].labelled], heads[head.name].actual, heads[head.name].probs)
                 for name, heads in per_split.items()}
        save(head.folder(path.parent) / path.name, head.classes, parts)


def save(path: Path, classes: list[str], splits: dict[str, Split]) -> None:
    parts = []
    for name in SPLITS:
        part = splits[name]
        frame = pd.DataFrame({"split": name, "id": part.ids, "label": part.labels})
        columns = [PREDICTION] if classes == [numbers.OUTPUT] else [f"prob_{c}" for c in classes]
        parts.append(pd.concat([frame, pd.DataFrame(part.probs, columns=columns)], axis=1))
    write_table(path, pd.concat(parts, ignore_index=True))


def load(path: Path, member: str) -> MemberProbabilities:
    if not path.is_file():
        raise UserError(f"member {member!r}: its probabilities {path} are missing (run its stage: dvc repro member@{member})")
    frame = pd.read_parquet(path)
    if PREDICTION in frame.columns:
        return _load_numbers(frame, path, member)
    prob_columns = [c for c in frame.columns if c.startswith("prob_")]
    if not prob_columns or not {"split", "id", "label"} <= set(frame.columns):
        raise UserError(f"member {member!r}: {path} is not a probabilities table (columns {list(frame.columns)})")
    splits = {}
    for name in SPLITS:
        part = frame[frame["split"] == name]
        probs = part[prob_columns].to_numpy(dtype=np.float64)
        if part.empty or not np.all(np.isfinite(probs)) or not np.allclose(probs.sum(axis=1), 1, atol=1e-3):
            raise UserError(f"member {member!r}: {path} has no valid {name} probabilities (each row must sum to 1)")
        splits[name] = Split(part["id"].to_numpy(), part["label"].to_numpy(), probs)
    return MemberProbabilities(member, [c.removeprefix("prob_") for c in prob_columns], splits)


def _load_numbers(frame: pd.DataFrame, path: Path, member: str) -> MemberProbabilities:
    splits = {}
    for name in SPLITS:
        part = frame[frame["split"] == name]
        values = part[[PREDICTION]].to_numpy(dtype=np.float64)
        if part.empty or not np.all(np.isfinite(values)):
            raise UserError(f"member {member!r}: {path} has no valid {name} predictions (each must be a finite number)")
        splits[name] = Split(part["id"].to_numpy(), part["label"].to_numpy(dtype=np.float64), values)
    return MemberProbabilities(member, [numbers.OUTPUT], splits)


def member_file(name: str, head: str | None = None) -> Path:
    """Where member `name`'s probabilities are: the evaluate stage's for the primary model, else its member stage's;
    with several heads, those of one head (save_heads)."""
    path = paths.PRIMARY_PROBABILITIES if name == PRIMARY else paths.MEMBER_REPORTS / name / "probabilities.parquet"
    return path if head is None else path.parent / head / path.name


def load_members(names: list[str], head: str | None = None) -> list[MemberProbabilities]:
    """Every member's probabilities (of one head, with several heads), checked to cover the same rows with the same label map."""
    members = [load(member_file(name, head), name) for name in names]
    first = members[0]
    for member in members[1:]:
        if member.classes != first.classes:
            raise UserError(f"member {member.name!r} predicts labels {member.classes} but member {first.name!r} predicts "
                            f"{first.classes}; every member must be trained on the same prepared data (dvc repro member@{member.name})")
        for split in SPLITS:
            ours, theirs = first.splits[split], member.splits[split]
            if len(theirs.ids) != len(ours.ids):
                raise UserError(f"member {member.name!r} has {len(theirs.ids)} {split} predictions, member {first.name!r} has "
                                f"{len(ours.ids)}; rerun it: dvc repro member@{member.name}")
            if not (np.array_equal(theirs.ids, ours.ids) and np.array_equal(theirs.labels, ours.labels)):
                raise UserError(f"member {member.name!r} predicted other {split} rows than member {first.name!r}; rerun it: "
                                f"dvc repro member@{member.name}")
    return members
