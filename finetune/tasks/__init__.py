"""The one interface between the stages and a task (text classification, image classification...).

A task is ONE module, finetune/tasks/<task>.py, named exactly like the `task` value in params.yaml
and holding `TASK = <Task instance>`. The folder is the registry: `get_task(name)` imports the module
on first use, so a stage loads only its own task's code, and dvc.yaml lists
`finetune/tasks/${task}.py` as a dependency, so editing one task's module reruns only that task's
pipelines. Stages never touch tokenizers, pixels or model heads: they call a Task, so adding a task
adds a module here and touches no stage.

Tables: ingest writes `input` (the task's canonical stored form: text, or image file bytes...),
`label` (a name), optional `split` / `confidence`, and where each row came from (`source_row`,
`source_line`, `origin`). Preprocess keeps `id`, `input`, `label` (an index into the label map),
`origin`, `augmented`, and adds the task's feature columns (label_map.json lists them with any layout
facts the task needs to read them back).
"""
from __future__ import annotations

import functools
import importlib
import re
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import pandas as pd

from finetune.errors import UserError
from finetune.heads import Heads, target
from finetune.params import Data, Section, Train

FOLDER = Path(__file__).parent
TASK_NAME = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")


class ClassicalMember(ABC):
    """A classical (CPU, seconds) model fitted on the raw inputs: the floor every fine-tune is judged
    against and an ensemble member that makes different mistakes. `kind` names it in params.yaml."""
    kind: ClassVar[str]
    Settings: ClassVar[type[Section]]

    @abstractmethod
    def fit(self, frame: pd.DataFrame, settings: Section):
        """Fitted on a prepared table (input, label, the task's features): an object with
        predict_proba(frame) -> rows x classes for other prepared tables."""

    @abstractmethod
    def save(self, model, folder: Path) -> None:
        """Write the model into folder in a format that loads without pickle."""

    @abstractmethod
    def load(self, folder: Path):
        """The model `save` wrote."""

    def facts(self, model) -> dict:
        """A few numbers about the fitted model for its summary (e.g. how many features)."""
        return {}


class Task(ABC):
    name: ClassVar[str]
    Data: ClassVar[type[Data]]  # data keys: the shared ones + this task's input column and builtin sources
    Preprocess: ClassVar[type[Section]]  # the whole preprocess section
    Train: ClassVar[type[Train]] = Train  # the train section: the shared keys, or those + this task's model keys
    builtin_models: ClassVar[tuple[str, ...]] = ()
    display_name: ClassVar[str] = "input"  # the column that shows an example in CSV outputs (text, image...)
    # optional capabilities; None (or empty) = the task does not have them, and the stage says so
    classical: ClassicalMember | None = None
    explainer: str | None = None  # a name in finetune/attribution.py's EXPLAINERS (and finetune/html.py's EXPLANATION_VIEWS)
    # the val metrics training selects on (train.early_stopping.metric, search.metric); the first is the default
    val_metrics: ClassVar[tuple[str, ...]] = ("f1_macro", "accuracy", "loss")
    # ensemble.method values besides auto; empty = every method of the classifiers (finetune/ensemble.py)
    ensemble_methods: ClassVar[tuple[str, ...]] = ()
    # shared params sections this task replaces with its own schema (e.g. a causal LM's evaluate: prompts, sampling)
    sections: ClassVar[dict[str, type[Section]]] = {}

    # The stages are written for classifiers and ask the task for every specific (inputs, model, features...). A task
    # whose work in a stage is another verb altogether (a causal LM splits by document and packs blocks, scores perplexity,
    # mixes next-token distributions) names, per stage, the module holding that verb: a function named like the stage,
    # taking the stage's arguments. dvc.yaml lists each such module among that stage's deps (tests/test_dvc_yaml.py checks).
    verbs: ClassVar[dict[str, str]] = {}

    # -- stage verbs -------------------------------------------------------------------------------
    def own_verb(self, stage: str) -> Callable[..., dict] | None:
        """This task's own `run(params[, name])` for the stage, or None: the stage's own code. The stage never asks which task it runs."""
        module = self.verbs.get(stage)
        return getattr(importlib.import_module(module), stage) if module else None

    # -- data --------------------------------------------------------------------------------------
    @abstractmethod
    def read(self, data: Data):
        """A finetune.sources.Source: rows with `input`, `label` (+ `confidence`, `split` when configured),
        `source_row`, `source_line` and `origin`, the bad rows found while reading, and what was ignored."""

    def check_inputs(self, inputs: pd.Series, data: Data) -> tuple[pd.Series, pd.Series]:
        """(stored form of each input, the problem with it or "" when fine). Ingest quarantines the
        rows with a problem, or stops at the first when data.on_bad_rows is error."""
        return inputs, pd.Series("", index=inputs.index)

    @abstractmethod
    def normalize(self, inputs: pd.Series, preprocess) -> tuple[pd.Series, pd.Series]:
        """(canonical form of each input under the preprocess settings (text: entities decoded, whitespace...),
        the problem that makes it unusable or "")."""

    @abstractmethod
    def duplicate_key(self, inputs: pd.Series) -> pd.Series:
        """Normalized inputs with equal keys count as the same example (duplicates, split leakage)."""

    @abstractmethod
    def featurize(self, parts: dict[str, pd.DataFrame], params) -> tuple[dict[str, pd.DataFrame], dict]:
        """parts: {split: id, input, label (a name)}. Returns the tables with `augmented` and the
        model's features added (augmented copies of train rows where the task augments offline), and
        the layout stored in label_map.json: at least {"features": [feature columns]}."""

    def shared_features(self, params, prepared: dict[str, pd.DataFrame]) -> tuple[dict[str, pd.DataFrame], dict] | None:
        """(tables, layout) when members and search trials must use the prepared features as they are (a causal LM's
        members mix distributions on the SAME blocks), checked against `params`' model; None: they featurize the
        prepared rows again with their own model and preprocess settings (finetune/featurize.py refeaturized)."""
        return None

    def split_statistics(self, table: pd.DataFrame) -> dict:
        """Facts about one prepared split for reports/preprocess.json and the report's data table."""
        return {}

    # -- models ------------------------------------------------------------------------------------
    @abstractmethod
    def check_model(self, model: str) -> str | None:
        """Why `train.model` cannot be loaded by this task, or None."""

    @abstractmethod
    def model_source(self, model: str) -> str:
        """Where the pretrained weights `train.model` names are (builtins resolved)."""

    @abstractmethod
    def load_processor(self, model_dir: str, trust_remote_code: bool):
        """What turns inputs into model features (tokenizer, image normalisation...), as saved with the model."""

    @abstractmethod
    def load_model(self, source: str, label_map: dict, train) -> Any:
        """A classifier with one output per label of label_map (labels + the layout featurize wrote) on top of
        the pretrained weights, train.dropout applied."""

    @abstractmethod
    def load_trained(self, model_dir: str, trust_remote_code: bool) -> Any:
        """A fine-tuned classifier, exactly as save_trained wrote it."""

    @abstractmethod
    def save_trained(self, model, processor, folder: Path) -> None:
        """Weights as safetensors + everything load_trained and load_processor need."""

    @abstractmethod
    def model_outline(self, train) -> Any:
        """The model's module tree without weights (meta device): model-dependent checks before training."""

    def compressor(self, model) -> str:
        """The name in finetune/compressors.py's COMPRESSORS that compresses this trained model (its family decides);
        raises finetune.errors.Unsupported with the reason when none does (the compress stage says so)."""
        from finetune.errors import Unsupported

        raise Unsupported(f"the {self.name} task has no compression methods")

    def load_architecture(self, model_dir: str) -> Any:
        """The model saved in model_dir with fresh weights (what a compressor loads int8 weights into)."""
        raise NotImplementedError(f"the {self.name} task does not rebuild models without their weights")

    @abstractmethod
    def dataset(self, frame: pd.DataFrame, layout: dict, processor, augment=None, seed: int = 0):
        """A torch Dataset of feature dicts with `labels`; with `augment` (the preprocess settings) the
        training set, augmented online and seeded per epoch and row where the task does that."""

    @abstractmethod
    def collator(self, processor) -> Callable[[list[dict]], dict]:
        """Turns a list of dataset items into a batch."""

    def batch_augmenter(self, preprocess, num_labels: int) -> Callable[[dict], dict] | None:
        """Batch-level augmentation of training batches (MixUp/CutMix: labels become probabilities)."""
        return None

    def predict_proba(self, model, processor, frame: pd.DataFrame, layout: dict, batch_size: int) -> np.ndarray:
        """Class probabilities in the frame's own row order (a sequential loader, never length-grouped); with several
        tasks each head's, side by side (finetune/heads.py)."""
        import torch

        heads = Heads.of(layout)
        model.eval()
        device = next(model.parameters(), torch.empty(0)).device  # an int8 CNN may hold no float parameter
        loader = torch.utils.data.DataLoader(self.dataset(frame.assign(label=0), layout, processor), batch_size=batch_size,
                                             collate_fn=self.collator(processor))
        chunks = []
        with torch.inference_mode():
            for batch in loader:
                batch.pop("labels", None)
                logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
                chunks.append(heads.softmax(logits.float()).cpu().numpy())
        return np.concatenate(chunks)

    # -- report ------------------------------------------------------------------------------------
    def display(self, frame: pd.DataFrame) -> pd.Series:
        """One string per row that identifies the example in CSV outputs (misclassified.csv...)."""
        return frame["input"].astype(str)

    @abstractmethod
    def render(self, value) -> str:
        """HTML for one input in the report (escaped text, an embedded thumbnail...)."""

    def report_sections(self, params) -> list[tuple[str, str]]:
        """Extra (title, html) sections of the report (e.g. an augmentation preview)."""
        return []


def task_names() -> list[str]:
    return sorted(path.stem for path in FOLDER.glob("*.py") if TASK_NAME.fullmatch(path.stem))


@functools.cache
def get_task(name: str) -> Task:
    if not TASK_NAME.fullmatch(str(name)) or not (FOLDER / f"{name}.py").is_file():
        raise UserError(f"unknown task {name!r}; tasks: {task_names()} (one module each: finetune/tasks/<task>.py)")
    return importlib.import_module(f"finetune.tasks.{name}").TASK


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
