"""The one interface between the stages and a task: every stage calls the same methods for every task.

A task is a folder, finetune/tasks/<task>/, whose __init__.py holds `TASK = <Task instance>` (the registry,
finetune/tasks/__init__.py, loads it by name). A task belongs to a FAMILY, the package that implements the stage
verbs for every task of its kind, one module per stage (finetune/families/<family>/<stage>.py, each with
`run(task, params, ...)`): `classification` (text, image, image + text) and `generative` (causal LM). A stage does the
same thing whatever the task: read params, call the verb, write its outputs atomically, record the metrics; a verb
that does not apply to a task raises finetune.errors.Unsupported with the reason, and the stage writes that reason as
its result ("skipped").

The public surface, all of it (a family adds the hooks its modules call, documented in the family's __init__.py):
    name, family, sections, val_metrics, models         what the task is (class attributes, and its Models)
    family_sections                                      the sections every task of the family has (its family sets them)
    read, check_inputs, display                          ingest: rows from data.source, each input checked, shown
    preprocess, evaluate, member, ensemble,              the stage verbs: the family's module of that name
    compress, explain, report
    read_unlabelled, predictor                           predict: new rows from a user's file, a trained model's predictions
    features_for                                         a trial's or member's features (search, member, compress)
    normalize, duplicate_key, featurize, render          what every family's modules ask of the task's inputs
"""
from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import pandas as pd

from finetune.config.sections import Section
from finetune.data.sources import Source
from finetune.models.base import Models


class Task(ABC):
    name: ClassVar[str]  # params.yaml's `task`, and the task's folder finetune/tasks/<name>/
    family: ClassVar[str]  # the package of the family's stage modules, e.g. "finetune.families.classification"
    # the task's params sections, each a subclass of the shared section of that name (finetune/config/params.py SECTIONS);
    # the family's, updated by the task's own: the schema of a task is these, composed (params_class)
    sections: ClassVar[dict[str, type[Section]]] = {}
    val_metrics: ClassVar[tuple[str, ...]] = ("loss",)  # what training and search select on, on val; the first is the default
    has_labels: ClassVar[bool] = True  # rows carry classes, counted by ingest; False: `label` only names the row's document
    models: Models  # everything training needs to load, feed and save this task's models

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:  # a concrete task: its family's sections, the task's own over them
            cls.sections = {**cls.family_sections(), **cls.sections}

    @classmethod
    def family_sections(cls) -> dict[str, type[Section]]:
        """The sections every task of the family has (e.g. a classifier's evaluate and explain keys)."""
        return {}

    # -- ingest ------------------------------------------------------------------------------------
    @abstractmethod
    def read(self, data) -> Source:
        """Rows of data.source with `input`, `label` (+ `confidence`, `split` when configured), `source_row`, `source_line`
        and `origin`; the rows that could not be read (with the problem) and what was left out on purpose."""

    def check_inputs(self, inputs: pd.Series, data) -> tuple[pd.Series, pd.Series]:
        """(stored form of each input, its problem or ""); ingest quarantines the rows with a problem (or stops)."""
        return inputs, pd.Series("", index=inputs.index)

    def read_unlabelled(self, path: Path, data) -> Source:
        """Rows to predict from a file or folder the user names (`finetune predict --input`), read with the trained
        model's data settings (its input columns): `input`, `source_row`, `source_line`, `origin`, and no label. Files
        an input points to (images) are read here, confined to the table's or folder's own folder."""
        from finetune.errors import Unsupported

        raise Unsupported(f"the {self.name} task cannot read new rows to predict yet")

    def display(self, frame: pd.DataFrame) -> pd.Series:
        """One string per row that identifies an example in CSV outputs (quarantine, misclassified.csv...)."""
        return frame["input"].astype(str)

    # -- the stage verbs: each runs finetune/families/<family>/<stage>.py ---------------------------
    def _verb(self, stage: str):
        return importlib.import_module(f"{self.family}.{stage}").run

    def preprocess(self, params, frame: pd.DataFrame, folder: Path) -> tuple[dict, pd.DataFrame]:
        """Clean, split and featurize the ingested rows into folder ({train,val,test}.parquet, label_map.json):
        (the summary for reports/preprocess.json, the dropped rows with their `problem`)."""
        return self._verb("preprocess")(self, params, frame, folder)

    def evaluate(self, params, folder: Path) -> dict:
        """Score models/model on the test split, files into folder (reports/evaluate/): the metrics."""
        return self._verb("evaluate")(self, params, folder)

    def member(self, params, name: str, model_folder: Path, reports_folder: Path) -> dict:
        """Train ensemble member `name` into model_folder, its predictions into reports_folder: its summary."""
        return self._verb("member")(self, params, name, model_folder, reports_folder)

    def ensemble(self, params, folder: Path, model_folder: Path) -> dict:
        """Combine the members' saved predictions, files into folder (reports/ensemble/) and what predicting with the
        ensemble needs into model_folder (models/ensemble/): the metrics."""
        return self._verb("ensemble")(self, params, folder, model_folder)

    def compress(self, params, model_folder: Path, reports_folder: Path) -> dict:
        """Smaller models of the best fine-tuned one into model_folder, scored against it (files in reports_folder): the metrics."""
        return self._verb("compress")(self, params, model_folder, reports_folder)

    def explain(self, params, folder: Path) -> dict:
        """Why models/model predicts what it does, every score in folder (reports/explain/): the metrics."""
        return self._verb("explain")(self, params, folder)

    def report(self, params) -> list[tuple[str, str]]:
        """The report's (title, HTML) sections from the other stages' outputs (the report stage adds the params)."""
        return self._verb("report")(self, params)

    def predictor(self, model_dir: Path, trust_remote_code: bool = False, backend: str = "torch"):
        """The trained model in model_dir, ready to predict new rows: an object with `predict(path, batch_size)` ->
        finetune.inference.Predicted (finetune/families/<family>/predict.py); backend onnx: its model.onnx (finetune export)."""
        return self._verb("predict")(self, model_dir, trust_remote_code, backend)

    # -- features of another recipe (members, search trials, compress teachers) --------------------
    @abstractmethod
    def features_for(self, params, prepared: dict[str, pd.DataFrame], label_map: dict) -> tuple[dict[str, pd.DataFrame], dict]:
        """(tables, layout) of the prepared splits for `params`' model and preprocess settings (a member's, a trial's)."""

    # -- what the families' modules ask of the task's inputs ---------------------------------------
    @abstractmethod
    def normalize(self, inputs: pd.Series, preprocess) -> tuple[pd.Series, pd.Series]:
        """(canonical form of each input under the preprocess settings, the problem that makes it unusable or "")."""

    @abstractmethod
    def duplicate_key(self, inputs: pd.Series) -> pd.Series:
        """Normalized inputs with equal keys count as the same example (duplicates, split leakage)."""

    @abstractmethod
    def featurize(self, parts: dict[str, pd.DataFrame], params, trained: dict | None = None) -> tuple[dict[str, pd.DataFrame], dict]:
        """{split: id, input, label (a name)} -> (the tables with the model's features, the layout for label_map.json: at
        least {"features": [feature columns]}). Classifiers add `augmented` (and augmented copies of train rows where the
        task augments offline); a generative task turns documents into training examples (the causal LM's blocks).
        `trained`: predict's call, with a trained model's layout (label_map.json) and one part of new rows (no label):
        every choice the layout records (text: max_length; images: channels) is taken from it, never derived from the rows,
        so a row gets exactly the features it got in training."""

    @abstractmethod
    def render(self, value) -> str:
        """HTML for one input in the report (escaped text, an embedded thumbnail...)."""
