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

Activations (`activations`): torch.ao picks ONE 7-bit scale and zero point for a layer's whole input
(`per_tensor`, the default: the classifiers). In a causal LM one token's huge activations (the first
token of a sequence, the "attention sink") then set the scale for every other token of the block, and
perplexity collapses (SmolLM2-135M: +300 %). `per_token` gives each input row its own scale and zero
point: one row (a decoding step) goes through the same fbgemm kernel (one row per tensor IS per
token), several rows (a prompt, a scored block) are quantized row by row exactly as fbgemm would
quantize each alone, then multiplied in int8 (torch._int_mm): a block scores what decoding computes,
up to float rounding. It keeps a second, plain copy of the int8 weights for that (1 byte a weight). Without AVX-512
(ATen's CPU capability), torch._int_mm runs a slow generic loop (on an AVX2 EPYC: 13x slower than the same product in
float64, which made scoring SmolLM2's test blocks take hours): there the int8 x int8 product is computed in float64,
whose sums of int8 products are exact integers, so the result is bit for bit _int_mm's.
`calibration` (token-id batches; Llama, Mistral, Qwen2 decoders) adds SmoothQuant (Xiao et al. 2023): per
input channel, difficulty moves from the activations into the weights, s = max|x|^alpha / max|w|^(1-alpha),
folded exactly into the RMSNorm before q/k/v and gate/up, into up_proj before down_proj and into the
final norm before the LM head (untied from the embedding table); nothing runs at inference.
In those decoders the linears that read one input (q/k/v, gate/up) then run as one int8 call each (`FusedGroup`:
same logits bit for bit, +13 % decoding tokens/s on SmolLM2-135M in bench/lm_int8.py; the saved file keeps them separate).

torch.ao keeps quantized weights in packed, pickled-only objects, so `save` unpacks them into
plain int8 tensors + scales in int8.safetensors, and `load` rebuilds the architecture from
config.json, quantizes it the same way and writes the saved weights into it: no pickle anywhere
(smoothing lives in the saved weights: nothing to redo).
"""
from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterable
from pathlib import Path

import torch
import transformers
from safetensors.torch import load_file, save_file
from torch import nn
from torch.ao.quantization import float_qparams_weight_only_qconfig, per_channel_dynamic_qconfig, quantize_dynamic
from torch.ao.quantization.quantization_mappings import get_default_dynamic_quant_module_mappings
from transformers.pytorch_utils import Conv1D

WEIGHTS = "int8.safetensors"
SPEC = "quantization.json"
ACTIVATIONS = ("per_tensor", "per_token")
QMAX, SMALL_SCALE = 127, 6.1e-5  # fbgemm's dynamic linear: 7-bit unsigned activations (reduce_range); ATen's smallest scale


def cpu() -> dict:
    """What this machine's int8 kernels can use, recorded beside every int8 timing: the speed-up depends on it. On one
    2-core AMD EPYC with AVX-512 VNNI, capping fbgemm and oneDNN to AVX2 (FBGEMM_ENABLE_INSTRUCTIONS=AVX2,
    ONEDNN_MAX_CPU_ISA=AVX2) cut the text model's int8 speed-up at batch 32 from about 2.2x to 1.5x
    (docs/benchmarks/compression.md)."""
    flags = set(Path("/proc/cpuinfo").read_text().split()) if Path("/proc/cpuinfo").exists() else set()
    best = next((name for flag, name in (("avx512_vnni", "AVX-512 VNNI"), ("avx_vnni", "AVX-VNNI"), ("avx512f", "AVX-512"), ("avx2", "AVX2"))
                 if flag in flags), "unknown")
    capped = {key: os.environ[key] for key in ("FBGEMM_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY") if key in os.environ}
    return {"int8_instructions": best, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "quantized_engine": torch.backends.quantized.engine, **({"capped_by": capped} if capped else {})}


def _row_qparams(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the scale and zero point fbgemm's dynamic linear would choose for that row alone
    (ATen QuantUtils.h ChooseQuantizationParams, qmin 0, qmax 127; the same double-precision steps)."""
    low, high = rows.amin(1).clamp(max=0).double(), rows.amax(1).clamp(min=0).double()
    scale = (high - low) / QMAX
    scale = torch.where((scale.float() == 0) | (1 / scale.float()).isinf(), 0.1, scale)
    stretch = torch.where(scale < SMALL_SCALE, SMALL_SCALE / scale, 1.0)  # a tiny scale is raised, the range widened alike
    low, high, scale = low * stretch, high * stretch, torch.where(scale < SMALL_SCALE, SMALL_SCALE, scale).float().double()
    from_low = torch.where(-(low / scale).abs() < QMAX - (high / scale).abs(), -low / scale, QMAX - high / scale)
    return scale.float(), from_low.round().clamp(0, QMAX)


def _int8_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b of two int8 matrices, the exact int32 values as float32 (module docstring: _int_mm only where it is fast)."""
    if torch.backends.cpu.get_cpu_capability().startswith("AVX512"):
        return torch._int_mm(a, b).float()
    return (a.double() @ b.double()).float()  # every partial sum is an integer far below 2^53: exact


class PerTokenLinear(torch.ao.nn.quantized.dynamic.Linear):
    """torch.ao's dynamic int8 Linear with each input row (token) quantized on its own scale and zero point."""

    def set_weight_bias(self, w: torch.Tensor, b: torch.Tensor | None) -> None:
        super().set_weight_bias(w, b)
        self.int8_t = w.int_repr().t().contiguous()  # (in, out) for torch._int_mm; fbgemm's packed copy cannot be read fast
        self.weight_scales = w.q_per_channel_scales().float()  # symmetric per-channel weights: zero points are 0
        self.float_bias = None if b is None else b.detach()  # self.bias() unpacks the whole packed weight (milliseconds a call)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() == x.shape[-1]:
            return super().forward(x)  # one row: fbgemm's per-tensor parameters are this row's own
        rows = x.reshape(-1, x.shape[-1])
        scale, zero = _row_qparams(rows)
        centred = (torch.round(rows * (1 / scale)[:, None] + zero[:, None]).clamp(0, QMAX) - zero[:, None]).to(torch.int8)
        y = _int8_matmul(centred, self.int8_t) * (scale[:, None] * self.weight_scales)
        if self.float_bias is not None:
            y = y + self.float_bias
        return y.reshape(*x.shape[:-1], -1)


SMOOTHABLE = ("llama", "mistral", "qwen2")  # decoders whose norms multiply by their weight (Gemma's adds 1 to it: not foldable so)


def _shared_input_groups(model: nn.Module) -> list[tuple[nn.Module, list[nn.Module]]]:
    """(module whose output feeds the linears, the linears reading that same input) of each layer of a Llama-style
    decoder: q/k/v after the input norm, gate/up after the post-attention norm; [] for other models."""
    if getattr(getattr(model, "config", None), "model_type", None) not in SMOOTHABLE:
        return []
    return [group for layer in model.model.layers for group in
            ((layer.input_layernorm, [layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj]),
             (layer.post_attention_layernorm, [layer.mlp.gate_proj, layer.mlp.up_proj]))]


def _smoothing_groups(model: nn.Module) -> list[tuple[nn.Module, list[nn.Linear]]]:
    """(module whose output channels feed the linears, those linears) of a Llama-style decoder; [] for other models."""
    if not isinstance(getattr(model, "lm_head", None), nn.Linear):
        return []
    groups = _shared_input_groups(model)
    # down_proj's input is act(gate) * up: linear in up's output rows
    groups += [(layer.mlp.up_proj, [layer.mlp.down_proj]) for layer in (model.model.layers if groups else [])]
    return groups + [(model.model.norm, [model.lm_head])] if groups else []


class FusedGroup:
    """Linears reading the same input (q/k/v, gate/up) as ONE int8 matmul: a one-row call costs fbgemm 30-40 us whatever
    its size (BENCHMARKS.md), so three small calls cost nearly three times one wider call. The first part called with an
    input computes every part's rows; the others take theirs from that output and the last one drops it. Deliberately
    not a submodule: save() writes each part's rows under the part's own name (the unfused file), so fusing adds no copy
    of the weights in memory or on disk. Per-channel weights and per-row activations make it bit-for-bit the same."""

    def __init__(self, linears: list[PerTokenLinear]):
        weights = [linear.weight() for linear in linears]
        fused = torch._make_per_channel_quantized_tensor(torch.cat([w.int_repr() for w in weights]),
                                                         torch.cat([w.q_per_channel_scales() for w in weights]),
                                                         torch.cat([w.q_per_channel_zero_points() for w in weights]), 0)
        biases = [linear.float_bias for linear in linears]
        self.linear = PerTokenLinear(fused.shape[1], fused.shape[0], dtype=torch.qint8)
        self.linear.set_weight_bias(fused, None if biases[0] is None else torch.cat(biases))
        ends = torch.tensor([w.shape[0] for w in weights]).cumsum(0).tolist()
        self.rows = [slice(start, end) for start, end in zip([0, *ends], ends)]
        self.input, self.output, self.waiting = None, None, set()

    def part(self, index: int, x: torch.Tensor) -> torch.Tensor:
        if self.input is not x or index not in self.waiting:
            self.input, self.output, self.waiting = x, self.linear(x), set(range(len(self.rows)))
        self.waiting.discard(index)
        rows = self.output[..., self.rows[index]]
        if not self.waiting:
            self.input = self.output = None
        return rows


class FusedPart(nn.Module):
    """One linear of a FusedGroup, in that linear's place; weight() and bias() read its rows of the fused layer."""

    def __init__(self, group: FusedGroup, index: int):
        super().__init__()
        self.group, self.index = group, index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.group.part(self.index, x)

    def weight(self) -> torch.Tensor:
        fused, rows = self.group.linear.weight(), self.group.rows[self.index]
        return torch._make_per_channel_quantized_tensor(fused.int_repr()[rows], fused.q_per_channel_scales()[rows],
                                                        fused.q_per_channel_zero_points()[rows], 0)

    def bias(self) -> torch.Tensor | None:
        bias = self.group.linear.float_bias
        return None if bias is None else bias[self.group.rows[self.index]]


def fuse_shared_inputs(model: nn.Module) -> nn.Module:
    """Each group of per-token int8 linears reading one input becomes a FusedGroup (in place)."""
    names = {module: name for name, module in model.named_modules()}
    for _, linears in _shared_input_groups(model):
        if all(type(linear) is PerTokenLinear for linear in linears):
            group = FusedGroup(linears)
            for index, linear in enumerate(linears):
                model.set_submodule(names[linear], FusedPart(group, index))
    return model


@torch.no_grad()
def smooth(model: nn.Module, calibration: Iterable[torch.Tensor], alpha: float) -> dict:
    """SmoothQuant folded into model (in place); what was done. The float model computes the same function after it."""
    groups = _smoothing_groups(model)
    if not groups:
        return {"applied": False, "reason": f"SmoothQuant is implemented for {', '.join(SMOOTHABLE)} decoders, not {type(model).__name__}"}
    peaks: dict[nn.Module, torch.Tensor] = {}

    def record(module, args):
        peak = args[0].abs().reshape(-1, args[0].shape[-1]).amax(0)
        peaks[module] = torch.maximum(peaks[module], peak) if module in peaks else peak

    hooks = [linears[0].register_forward_pre_hook(record) for _, linears in groups]  # a group's linears share their input
    tokens = 0
    for ids in calibration:
        model(input_ids=ids)
        tokens += ids.numel()
    for hook in hooks:
        hook.remove()
    if model.get_input_embeddings().weight is model.lm_head.weight:  # the head is scaled below, the lookup must not be
        model.lm_head.weight = nn.Parameter(model.lm_head.weight.clone())
    for source, linears in groups:
        weight_peak = torch.cat([linear.weight.abs() for linear in linears]).amax(0)
        s = (peaks[linears[0]].clamp(min=1e-5) ** alpha / weight_peak.clamp(min=1e-5) ** (1 - alpha)).clamp(min=1e-5)
        for tensor in (source.weight, getattr(source, "bias", None)):
            if tensor is not None:
                tensor.div_(s if tensor.dim() == 1 else s[:, None])  # a norm's scale, or up_proj's output rows
        for linear in linears:
            linear.weight.mul_(s)
    return {"applied": True, "alpha": alpha, "calibration_tokens": tokens, "linear_layers": sum(len(linears) for _, linears in groups)}


def quantize(model: nn.Module, embeddings: bool, activations: str = "per_tensor", calibration: Iterable[torch.Tensor] | None = None,
             alpha: float = 0.5, fuse: bool = True) -> nn.Module:
    """An int8 copy of model (which is left as it is). calibration (per_token only): input_ids batches for SmoothQuant.
    fuse (per_token only): linears reading one input run as one int8 call (fuse_shared_inputs)."""
    if activations not in ACTIVATIONS:
        raise ValueError(f"activations is {activations!r}: expected one of {ACTIVATIONS}")
    if calibration is not None and activations != "per_token":
        raise ValueError("SmoothQuant calibration is only supported with per_token activations")
    spec = {nn.Linear: per_channel_dynamic_qconfig}
    if embeddings:
        spec[nn.Embedding] = float_qparams_weight_only_qconfig
    model = copy.deepcopy(model)
    for name, module in list(model.named_modules()):
        if isinstance(module, Conv1D):  # y = x @ W + b with W (in, out): nn.Linear holds W transposed
            linear = nn.Linear(module.nx, module.nf, device="meta")  # both tensors replaced next
            linear.weight, linear.bias = nn.Parameter(module.weight.detach().t()), module.bias
            model.set_submodule(name, linear)
    facts = {}
    if activations == "per_token":
        facts["activations"] = "per_token"
        if calibration is not None:
            facts["smoothing"] = smooth(model.eval(), calibration, alpha)
    mapping = get_default_dynamic_quant_module_mappings() | {nn.Linear: PerTokenLinear} if activations == "per_token" else None
    model = quantize_dynamic(model, spec, dtype=torch.qint8, mapping=mapping, inplace=True)
    model.int8_facts = facts  # what save() adds to quantization.json
    return fuse_shared_inputs(model) if fuse and activations == "per_token" else model


QUANTIZED = (torch.ao.nn.quantized.dynamic.Linear, FusedPart, torch.ao.nn.quantized.Embedding)


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
        if not isinstance(module, torch.ao.nn.quantized.Embedding) and module.bias() is not None:
            tensors[f"{name}.bias"] = module.bias()
    tensors |= _float_state(model)
    save_file({name: value.contiguous() for name, value in tensors.items()}, folder / WEIGHTS)
    (folder / SPEC).write_text(json.dumps({"backend": "torch.ao quantize_dynamic", "linear": "int8 per-channel weights, dynamic int8 activations",
                                           "embeddings": "int8 weight-only, per-row float scale" if embeddings else "fp32",
                                           **getattr(model, "int8_facts", {})}, indent=2))


def load(folder: Path) -> nn.Module:
    """The int8 model saved by `save`, ready for CPU inference."""
    config = transformers.AutoConfig.from_pretrained(folder)  # trust_remote_code stays off: a transformers class
    architecture = getattr(transformers, config.architectures[0])
    spec = json.loads((folder / SPEC).read_text())
    activations = spec.get("activations", "per_tensor")
    model = quantize(architecture(config).eval(), embeddings=spec["embeddings"] != "fp32", activations=activations, fuse=False)
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
    return fuse_shared_inputs(model) if activations == "per_token" else model
