"""The interface between training and a task's models: what `fit` (finetune/training/fit.py), search trials and the
family stages need to load, build, feed and save a model, whatever it is (a text classifier, a CNN, a causal LM).

A task holds one `Models` object (`task.models`); nothing outside it touches tokenizers, pixels or model heads.
"""
from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, ClassVar

BUILTIN_CACHE = Path(".cache/builtin")  # builtin models converted from their package's format, once per package version


def folder_problem(model: str, builtin: tuple[str, ...]) -> str | None:
    """Why `train.model` is neither one of the `builtin` models nor a Hugging Face model folder (one with config.json), or None."""
    if model.startswith("builtin:"):
        return None if model in builtin else f"unknown builtin model {model!r}; expected one of {builtin}"
    if not (Path(model) / "config.json").is_file():
        return f"{model!r} is not a Hugging Face model directory (no config.json in it)"
    return None


def folder_config(model: str) -> dict:
    """A Hugging Face model folder's config.json (after folder_problem said it has one)."""
    return json.loads((Path(model) / "config.json").read_text())


def converted_once(name: str, convert: Callable[[Path], None]) -> Path:
    """BUILTIN_CACHE/NAME, made by convert(folder) on first use: a folder holding config.json is done; concurrent stages
    wait on a file lock for the one conversion (convert writes through finetune.io.atomic_path, so a killed one leaves
    nothing that looks done)."""
    from filelock import FileLock

    folder = BUILTIN_CACHE / name
    if (folder / "config.json").is_file():
        return folder
    BUILTIN_CACHE.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if not (folder / "config.json").is_file():
            convert(folder)
    return folder


class Models(ABC):
    builtin: ClassVar[tuple[str, ...]] = ()  # the `builtin:NAME` models this family ships (train.model)

    @abstractmethod
    def check(self, model: str) -> str | None:
        """Why `train.model` cannot be loaded by this family (a builtin it does not ship, a folder of another kind), or None."""

    @abstractmethod
    def source(self, model: str) -> str:
        """Where the pretrained weights `train.model` names are (a builtin resolved to its folder or file)."""

    @abstractmethod
    def load_processor(self, model_dir: str, trust_remote_code: bool) -> Any:
        """What turns stored features into model inputs (tokenizer, image mean and std...), as saved with the model."""

    @abstractmethod
    def load_model(self, source: str, label_map: dict, train) -> Any:
        """The pretrained model ready to fine-tune on label_map (a classifier: one output per label), train.dropout applied."""

    @abstractmethod
    def load_trained(self, model_dir: str, trust_remote_code: bool) -> Any:
        """A fine-tuned model exactly as save_trained wrote it."""

    @abstractmethod
    def save_trained(self, model, processor, folder: Path) -> None:
        """Weights as safetensors + everything load_trained and load_processor need."""

    def trained_source(self, model_dir: Path) -> str:
        """The `train.model` value under which `source` and featurize find a TRAINED model's processor (predict): its folder."""
        return str(model_dir)

    def make_portable(self, folder: Path, params) -> str | None:
        """Add what lets other libraries load a trained folder (finetune export), or say why they cannot: None when nothing
        is needed (a Hugging Face text classifier loads in transformers' pipeline() as it is)."""
        return None

    @abstractmethod
    def outline(self, train) -> Any:
        """The model's module tree without weights (meta device): checks of train.* against the model before any work."""

    @abstractmethod
    def dataset(self, frame, layout: dict, processor, augment=None, seed: int = 0) -> Any:
        """A torch Dataset of feature dicts with `labels` from prepared rows; with `augment` (the preprocess settings)
        the training set, augmented online where the task does that."""

    @abstractmethod
    def collator(self, processor) -> Callable[[list[dict]], dict]:
        """Turns a list of dataset items into a batch."""

    def batch_augmenter(self, preprocess, num_labels: int) -> Callable[[dict], dict] | None:
        """Batch-level augmentation of training batches (MixUp/CutMix: labels become probabilities); None = none."""
        return None
