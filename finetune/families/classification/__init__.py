"""The classification family: text, image and image + text classifiers, one or several heads (finetune/data/heads.py).

One module per stage implements the verb for every task of the family: preprocess.py (clean, stratified split, label
checks, featurize), evaluate.py, member.py, ensemble.py, compress.py, explain.py, report.py. A task of the family is a
`ClassificationTask`: its folder adds its data reading, its Models (finetune/models/base.py) and the hooks below.
Several heads are handled here, in the family (each verb works per head), never in a stage.

Hooks a task may override, besides the Task interface's (normalize, duplicate_key, featurize and render: preprocess,
members, search trials, the report):
    display_name                     what one input is called in reports and reasons ("text", "image")
    split_statistics(table)          facts about a prepared split                  preprocess, member
    input_profile(tables, ...)       the data profile's facts about the inputs      preprocess (profile.py)
    similarity(layout)               vectors that find near-duplicate inputs        preprocess (profile.py)
    predict_proba(model, ...)        class probabilities in row order              evaluate, member, compress
    classical                        the task's classical member, or None           member (and the schema)
    explainer()                      the explainer (explain.py of the task)         explain
    explanation_view(...)            the report's view of its explanations          report
    compressor(model)                how the trained model gets smaller             compress
    report_sections(params)          extra report sections                          report
A hook that does not apply raises finetune.errors.Unsupported with the reason.
"""
from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
from pydantic import Field, create_model, model_validator

from finetune.config.sections import Ensemble, Evaluate, Explain, Member, Section
from finetune.data import numbers
from finetune.data.heads import Heads
from finetune.errors import Unsupported
from finetune.families.task import Task


class ClassifierEvaluate(Evaluate):
    misclassified_rows: int = Field(200, ge=0, le=1_000_000)  # most confident errors kept in misclassified.csv (numeric labels: the largest errors, largest_errors.csv)


class ClassifierExplain(Explain):
    """What every classifier's explainer reads; a task extends it with its own methods and keys."""
    examples: int = Field(12, ge=1, le=100_000)  # test examples: the most confident errors, most / least confident, then seeded random
    seed: int = 0  # the random examples and the random deletions are seeded
    methods: list[str] = ["integrated_gradients"]  # a task narrows the choices; integrated_gradients is required
    ig_steps: int = Field(50, ge=4, le=100_000)  # Riemann steps of Integrated Gradients (more: smaller convergence delta)
    faithfulness_k: int = Field(5, ge=1, le=10_000)  # delete the top 1..K attributed features (tokens, patches) vs K random ones
    random_draws: int = Field(5, ge=1, le=10_000)  # random deletions averaged per example and k

    @model_validator(mode="after")
    def _ig_included(self):
        if "integrated_gradients" not in self.methods:
            raise ValueError("methods must include integrated_gradients (the faithfulness check and the global view rank by it)")
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods lists one twice: {self.methods}")
        return self


class ClassicalMember(ABC):
    """A classical (CPU, seconds) model fitted on the raw inputs: the floor every fine-tune is judged against and an
    ensemble member that makes different mistakes. `kind` names it in params.yaml, `Settings` are its keys there."""
    kind: ClassVar[str]
    Settings: ClassVar[type[Section]]

    @abstractmethod
    def fit(self, frame: pd.DataFrame, settings: Section):
        """Fitted on a prepared table (input, label, the task's features): an object with predict_proba(frame) ->
        rows x classes for other prepared tables."""

    @abstractmethod
    def save(self, model, folder: Path) -> None:
        """Write the model into folder in a format that loads without pickle."""

    @abstractmethod
    def load(self, folder: Path):
        """The model `save` wrote."""

    def facts(self, model) -> dict:
        """A few numbers about the fitted model for its summary (e.g. how many features)."""
        return {}


def ensemble_section(task_name: str, classical: ClassicalMember | None) -> type[Ensemble]:
    """The ensemble section of a classifier: members of kind finetune or the task's classical kind (its settings under
    its kind's name); by default the classical member, or a second seed where the task has none."""
    kinds = ("finetune", classical.kind) if classical else ("finetune",)
    extra = {classical.kind: (classical.Settings, classical.Settings())} if classical else {}
    member = create_model(f"Member[{task_name}]", __base__=Member, kind=(Literal[kinds], "finetune"), **extra)
    default = {classical.kind: member(kind=classical.kind)} if classical else {"seed1": member(train={"seed": 1})}
    return create_model(f"Ensemble[{task_name}]", __base__=Ensemble, members=(dict[str, member], default))


class ClassificationTask(Task):
    family = "finetune.families.classification"
    val_metrics = ("f1_macro", "accuracy", "loss")
    display_name: ClassVar[str] = "input"
    classical: ClassVar[ClassicalMember | None] = None

    @classmethod
    def family_sections(cls) -> dict:
        return {"evaluate": ClassifierEvaluate, "explain": ClassifierExplain, "ensemble": ensemble_section(cls.name, cls.classical)}

    # -- preprocess --------------------------------------------------------------------------------
    def split_statistics(self, table: pd.DataFrame) -> dict:
        """Facts about one prepared split for reports/preprocess.json and the report's data table."""
        return {}

    def input_profile(self, tables: dict[str, pd.DataFrame], layout: dict, params) -> tuple[dict, list[dict], list[str]]:
        """For the data profile (profile.py): (facts about the prepared splits' inputs, the settings chosen from them as
        {setting, value, why}, suggestions naming the setting to change and why)."""
        return {}, [], []

    def similarity(self, layout: dict):
        """(vectors(frame) -> L2-normalised rows of a prepared table, the cosine at which two rows are near duplicates,
        how the vectors are made), or None: near duplicates are not looked for."""
        return None

    def features_for(self, params, prepared: dict[str, pd.DataFrame], label_map: dict) -> tuple[dict[str, pd.DataFrame], dict]:
        from finetune.data.heads import names
        from finetune.families.classification.features import refeaturized

        return refeaturized(self, params, prepared, names(label_map), label_map.get("target") or label_map.get("targets"))

    # -- predictions -------------------------------------------------------------------------------
    def predict_proba(self, model, processor, frame: pd.DataFrame, layout: dict, batch_size: int) -> np.ndarray:
        """Class probabilities in the frame's own row order; with several heads each head's, side by side (finetune/data/heads.py)."""
        return self.per_row(self.item_proba(model, processor, frame, layout, batch_size), frame, layout)

    def per_row(self, probs: np.ndarray, frame: pd.DataFrame, layout: dict) -> np.ndarray:
        """Each row's probabilities from those of its dataset items: the same array unless a row is several items (text chunks)."""
        return probs

    def item_proba(self, model, processor, frame: pd.DataFrame, layout: dict, batch_size: int) -> np.ndarray:
        """Class probabilities of each item of the frame's dataset (task.models.dataset), in order (a sequential loader,
        never length-grouped): what a model trains on, one per row unless a row is several items. A numeric label's model
        (finetune/data/numbers.py): its prediction in the label's units, items x 1."""
        import torch
        from tqdm.auto import tqdm

        heads, number = Heads.of(layout), numbers.is_number(layout)
        model.eval()
        device = next(model.parameters(), torch.empty(0)).device  # an int8 CNN may hold no float parameter
        loader = torch.utils.data.DataLoader(self.models.dataset(frame.assign(label=0), layout, processor), batch_size=batch_size,
                                             collate_fn=self.models.collator(processor))
        chunks = []
        with torch.inference_mode():
            for batch in tqdm(loader, desc="predicting", unit="batch", leave=False, disable=not sys.stderr.isatty()):
                batch.pop("labels", None)
                logits = model(**{k: v.to(device) for k, v in batch.items()}).logits.float()
                chunks.append(numbers.in_units(logits.cpu().numpy(), layout) if number else heads.softmax(logits).cpu().numpy())
        return np.concatenate(chunks)

    # -- explain, compress, report -----------------------------------------------------------------
    def explainer(self) -> Any:
        """An object with explain(params, task, model, processor, test, predictions, chosen, labels) -> (metrics,
        everything saved), from the task's explain.py."""
        raise Unsupported(f"the {self.name} task has no explainer yet")

    def explanation_view(self, result: dict, saved: dict, params) -> str:
        """The report's HTML of the explainer's results (after the shared faithfulness table), from the task's report.py."""
        return ""

    def compressor(self, model) -> Any:
        """The finetune/compression/compressors.py Compressor for this trained model: by default its model family's
        (compress.py compressor_for: CNNs, transformers); a task without one raises Unsupported."""
        from finetune.families.classification.compress import compressor_for

        return compressor_for(model, self.models)

    def report_sections(self, params) -> list[tuple[str, str]]:
        """Extra (title, html) sections of the report (e.g. an augmentation preview)."""
        return []
