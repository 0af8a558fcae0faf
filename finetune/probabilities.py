"""Class probabilities of one ensemble member on val and test, saved so the ensemble stage reruns
in seconds without retraining anybody. One parquet per member: columns split, id, label (int),
then prob_<label name> per class in label-map order (so members of other label maps are detected)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from finetune.errors import UserError
from finetune.io import write_table

SPLITS = ("val", "test")


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


def save(path: Path, classes: list[str], splits: dict[str, Split]) -> None:
    parts = []
    for name in SPLITS:
        part = splits[name]
        frame = pd.DataFrame({"split": name, "id": part.ids, "label": part.labels})
        parts.append(pd.concat([frame, pd.DataFrame(part.probs, columns=[f"prob_{c}" for c in classes])], axis=1))
    write_table(path, pd.concat(parts, ignore_index=True))


def load(path: Path, member: str) -> MemberProbabilities:
    if not path.is_file():
        raise UserError(f"member {member!r}: its probabilities {path} are missing (run its stage: dvc repro member@{member})")
    frame = pd.read_parquet(path)
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
