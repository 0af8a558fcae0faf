"""Prepared feature columns (token ids, attention masks...) served as a dataset of dicts with `labels`: what a task's
Models.dataset returns for features computed once in preprocess."""
from __future__ import annotations

import numpy as np
import pandas as pd

from finetune.data.heads import target


class FeatureDataset:
    """Rows of already-computed feature columns (token ids...) as dicts, with `labels`."""

    def __init__(self, frame: pd.DataFrame, feature_columns: list[str]):
        self.columns = {name: [np.asarray(v).tolist() for v in frame[name]] for name in feature_columns}
        self.labels = frame["label"].tolist()
        self.length = len(frame)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        return {**{name: values[index] for name, values in self.columns.items()}, "labels": target(self.labels[index])}
