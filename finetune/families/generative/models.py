"""Causal language models (any Hugging Face causal LM: Llama, GPT-2, Qwen...) as the generative family trains them:
loaded in fp32 from safetensors, trained on packed token blocks whose labels are the inputs (the model shifts them:
each position predicts the next token)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from finetune.errors import UserError
from finetune.models.base import Models, folder_config, folder_problem

DROPOUT_NAMES = ("attention_dropout", "hidden_dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop", "dropout")


def context_length(config) -> int | None:
    """Positions a model can attend over, from its config (None when the config does not say)."""
    return next((value for name in ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length")
                 if isinstance(value := getattr(config, name, None), int)), None)


def stop_ids(source: str, tokenizer, trust_remote_code: bool) -> set[int]:
    """The token ids generation stops at (generation.generate's rule): the EOS ids of the model's generation config
    (generation_config.json, else the model config's), else the tokenizer's EOS."""
    from transformers import AutoConfig, GenerationConfig

    try:
        eos = GenerationConfig.from_pretrained(source).eos_token_id
    except OSError:  # no generation_config.json: what from_pretrained derives from config.json when it loads the model
        eos = GenerationConfig.from_model_config(AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)).eos_token_id
    if eos is None:
        eos = tokenizer.eos_token_id
    return set(eos) if isinstance(eos, list) else {eos} - {None}


class CausalLMs(Models):
    """Any local causal-LM folder, and builtin:smollm2-135m (SmolLM2-135M-Instruct, builtin.py: the causal LM's and the
    chat's default)."""
    builtin = ("builtin:smollm2-135m",)

    def check(self, model: str) -> str | None:
        problem = folder_problem(model, self.builtin)
        if problem or model.startswith("builtin:"):
            return problem
        architectures = folder_config(model).get("architectures") or []
        if architectures and not any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures):
            return (f"{model!r} is a {', '.join(architectures)}, not a causal language model (expected an architecture ending in "
                    "ForCausalLM or LMHeadModel: a model with a next-token head)")
        return None

    def source(self, model: str) -> str:
        if model == "builtin:smollm2-135m":
            from finetune.families.generative.builtin import smollm2_dir

            return str(smollm2_dir())
        return model

    def load_processor(self, model_dir: str, trust_remote_code: bool):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
        if tokenizer.eos_token_id is None:
            raise UserError(f"the tokenizer of {model_dir} has no EOS token: documents could not be separated (set eos_token in its "
                            "tokenizer_config.json)")
        return tokenizer

    def load_model(self, source: str, label_map: dict, train):
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        config = AutoConfig.from_pretrained(source, trust_remote_code=train.trust_remote_code)
        if train.dropout is not None:
            for name in DROPOUT_NAMES:
                if hasattr(config, name):
                    setattr(config, name, train.dropout)
        return AutoModelForCausalLM.from_pretrained(source, config=config, use_safetensors=True, dtype=torch.float32,
                                                    trust_remote_code=train.trust_remote_code)

    def load_trained(self, model_dir: str, trust_remote_code: bool):
        import torch
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True, dtype=torch.float32, trust_remote_code=trust_remote_code)

    def save_trained(self, model, processor, folder: Path) -> None:
        model.save_pretrained(str(folder))
        processor.save_pretrained(str(folder))

    def outline(self, train):
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        config = AutoConfig.from_pretrained(self.source(train.model), trust_remote_code=train.trust_remote_code)
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config, trust_remote_code=train.trust_remote_code)

    def dataset(self, frame: pd.DataFrame, layout: dict, processor, augment=None, seed: int = 0):
        return BlockDataset(frame)

    def collator(self, processor):
        from transformers import default_data_collator

        return default_data_collator


class BlockDataset:
    """Packed blocks; the labels are the inputs (the model shifts them: each position predicts the next token), or the
    table's `labels` where it has them (a chat: -100 outside the assistant's turns, which the loss skips)."""

    def __init__(self, frame: pd.DataFrame):
        self.blocks = np.stack(frame["input_ids"].to_numpy()) if len(frame) else np.zeros((0, 0), np.int64)
        self.labels = np.stack(frame["labels"].to_numpy()) if "labels" in frame and len(frame) else None

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, index: int) -> dict:
        ids = self.blocks[index].astype(np.int64)
        return {"input_ids": ids, "labels": ids if self.labels is None else self.labels[index].astype(np.int64)}
