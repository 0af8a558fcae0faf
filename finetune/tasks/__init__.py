"""The one small interface between the stages and a task type (text, later image or causal LM).

Stages never touch tokenizers, model heads or collators directly: they call a Task. Adding a task
means adding a module here and a name in `TASKS`, with no change to any stage.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import pandas as pd
import torch

from finetune.errors import UserError
from finetune.params import Augment, Tfidf


class Task(ABC):
    """Inputs are one column (`input`) of the prepared tables: text for text classification."""

    @abstractmethod
    def normalize(self, inputs: pd.Series) -> pd.Series:
        """Canonical form of each input; empty string when unusable."""

    @abstractmethod
    def duplicate_key(self, inputs: pd.Series) -> pd.Series:
        """Inputs with equal keys count as the same example (duplicates, split leakage)."""

    @abstractmethod
    def augment(self, inputs: pd.Series, config: Augment) -> pd.Series:
        """`config.copies` perturbed copies of every input, seeded by `config.seed`."""

    @abstractmethod
    def load_processor(self, model_dir: str, trust_remote_code: bool):
        """The model's own preprocessor (tokenizer)."""

    @abstractmethod
    def encode(self, processor, inputs: pd.Series, max_length: int, pad_to_max: bool) -> pd.DataFrame:
        """Model features, one row per input, plus a boolean `truncated` column."""

    @abstractmethod
    def load_model(self, model_dir: str, labels: list[str], dropout: float | None, trust_remote_code: bool):
        """A classifier with len(labels) outputs on top of the pretrained weights in model_dir."""

    @abstractmethod
    def load_trained(self, model_dir: str, trust_remote_code: bool):
        """A fine-tuned classifier saved by the train stage, exactly as saved."""

    @abstractmethod
    def collator(self, processor):
        """Turns a list of feature dicts into a padded batch."""

    def fit_classical(self, inputs: pd.Series, labels: np.ndarray, config: Tfidf):
        """A classical (no GPU) model fitted on raw inputs: an object with predict_proba(inputs)."""
        raise UserError(f"task {type(self).__name__} has no classical ensemble member (kind: tfidf)")

    def save_classical(self, model, folder) -> None:
        """Write a fit_classical model into folder, in a format that loads without pickle."""
        raise NotImplementedError

    def load_classical(self, folder):
        raise NotImplementedError

    def dataset(self, frame: pd.DataFrame, feature_columns: list[str]) -> torch.utils.data.Dataset:
        return FeatureDataset(frame, feature_columns)

    @torch.inference_mode()
    def predict_proba(self, model, processor, frame: pd.DataFrame, feature_columns: list[str], batch_size: int) -> np.ndarray:
        """Class probabilities in the frame's own row order (a sequential loader, never length-grouped)."""
        model.eval()
        device = next(model.parameters()).device
        loader = torch.utils.data.DataLoader(
            FeatureDataset(frame, feature_columns, with_labels=False), batch_size=batch_size, collate_fn=self.collator(processor)
        )
        chunks = []
        for batch in loader:
            logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
            chunks.append(torch.softmax(logits.float(), dim=-1).cpu().numpy())
        return np.concatenate(chunks)


class FeatureDataset(torch.utils.data.Dataset):
    def __init__(self, frame: pd.DataFrame, feature_columns: list[str], with_labels: bool = True):
        self.columns = {name: [np.asarray(v).tolist() for v in frame[name]] for name in feature_columns}
        self.labels = frame["label"].tolist() if with_labels else None
        self.length = len(frame)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        item = {name: values[index] for name, values in self.columns.items()}
        if self.labels is not None:
            item["labels"] = int(self.labels[index])
        return item


def get_task(name: str) -> Task:
    from finetune.tasks.text import TextClassification

    tasks = {"text-classification": TextClassification}
    return tasks[name]()
