"""Post-training int8 quantization for CPU inference, saved as safetensors and loaded back.

Backend: torch.ao eager-mode `quantize_dynamic` (deprecated in favour of torchao, kept because it
measured fastest on CPU here: STACK-NOTES, BENCHMARKS.md). Linear layers get per-channel int8
weights with int8 activations quantized on the fly (fbgemm/x86 kernels); with `embeddings` the
embedding tables (half of MiniLM's weights) get int8 weights with a float scale and offset per row
(weight-only: a lookup dequantizes only the rows it reads). LayerNorms stay fp32.
GPT-2's Conv1D layers (a linear layer with its weight stored transposed) are turned into nn.Linear
first, so they get int8 too. A causal LM whose head is tied to its embedding table (Llama, GPT-2)
ends up with two int8 copies of that matrix (per-row int8 for the lookup, per-channel int8 for the
head's matmul): 2 bytes a weight on disk instead of the tied fp32 4.

torch.ao keeps quantized weights in packed, pickled-only objects, so `save` unpacks them into
plain int8 tensors + scales in int8.safetensors, and `load` rebuilds the architecture from
config.json, quantizes it the same way and writes the saved weights into it: no pickle anywhere.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
import transformers
from safetensors.torch import load_file, save_file
from torch import nn
from torch.ao.quantization import float_qparams_weight_only_qconfig, per_channel_dynamic_qconfig, quantize_dynamic
from transformers.pytorch_utils import Conv1D

WEIGHTS = "int8.safetensors"
SPEC = "quantization.json"


def quantize(model: nn.Module, embeddings: bool) -> nn.Module:
    """An int8 copy of model (which is left as it is)."""
    spec = {nn.Linear: per_channel_dynamic_qconfig}
    if embeddings:
        spec[nn.Embedding] = float_qparams_weight_only_qconfig
    model = copy.deepcopy(model)
    for name, module in list(model.named_modules()):
        if isinstance(module, Conv1D):  # y = x @ W + b with W (in, out): nn.Linear holds W transposed
            linear = nn.Linear(module.nx, module.nf, device="meta")  # both tensors replaced next
            linear.weight, linear.bias = nn.Parameter(module.weight.detach().t()), module.bias
            model.set_submodule(name, linear)
    return quantize_dynamic(model, spec, dtype=torch.qint8, inplace=True)


QUANTIZED = (torch.ao.nn.quantized.dynamic.Linear, torch.ao.nn.quantized.Embedding)


def quantized_modules(model: nn.Module):
    for name, module in model.named_modules():
        if isinstance(module, QUANTIZED):
            yield name, module


def _float_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every tensor of model outside the quantized modules (LayerNorms, the classifier's bias...)."""
    quantized = tuple(f"{name}." for name, _ in quantized_modules(model))
    return {name: value for name, value in model.state_dict().items()
            if isinstance(value, torch.Tensor) and not name.startswith(quantized)}


def save(model: nn.Module, folder: Path, embeddings: bool) -> None:
    """Write the int8 model into folder (next to the teacher's config.json and tokenizer files)."""
    tensors = {}
    for name, module in quantized_modules(model):
        weight = module.weight()
        tensors |= {f"{name}.qweight": weight.int_repr(), f"{name}.scales": weight.q_per_channel_scales(),
                    f"{name}.zero_points": weight.q_per_channel_zero_points()}
        if isinstance(module, torch.ao.nn.quantized.dynamic.Linear) and module.bias() is not None:
            tensors[f"{name}.bias"] = module.bias()
    tensors |= _float_state(model)
    save_file({name: value.contiguous() for name, value in tensors.items()}, folder / WEIGHTS)
    (folder / SPEC).write_text(json.dumps({"backend": "torch.ao quantize_dynamic", "linear": "int8 per-channel weights, dynamic int8 activations",
                                           "embeddings": "int8 weight-only, per-row float scale" if embeddings else "fp32"}, indent=2))


def load(folder: Path) -> nn.Module:
    """The int8 model saved by `save`, ready for CPU inference."""
    config = transformers.AutoConfig.from_pretrained(folder)  # trust_remote_code stays off: a transformers class
    architecture = getattr(transformers, config.architectures[0])
    spec = json.loads((folder / SPEC).read_text())
    model = quantize(architecture(config).eval(), embeddings=spec["embeddings"] != "fp32")
    tensors = load_file(folder / WEIGHTS)
    for name, module in quantized_modules(model):
        weight = torch._make_per_channel_quantized_tensor(
            tensors.pop(f"{name}.qweight"), tensors.pop(f"{name}.scales"), tensors.pop(f"{name}.zero_points"), 0)
        if isinstance(module, torch.ao.nn.quantized.Embedding):
            module.set_weight(weight)
        else:
            module.set_weight_bias(weight, tensors.pop(f"{name}.bias", None))
    state = _float_state(model)  # views of the model's own tensors
    if set(state) != set(tensors):
        raise ValueError(f"{folder / WEIGHTS} does not match {config.architectures[0]}: missing {sorted(set(state) - set(tensors))[:5]}, "
                         f"unexpected {sorted(set(tensors) - set(state))[:5]}")
    with torch.no_grad():
        for name, value in tensors.items():
            state[name].copy_(value)
    return model
