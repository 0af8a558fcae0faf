"""ONNX export of a classifier and its predictions with onnxruntime, beside PyTorch's.

Export: torch.onnx's TorchScript exporter (`dynamo=False`): 0.8 s for EfficientNet-Lite0 where the dynamo
exporter took 9-11 s (measured), same outputs; batch (and sequence length for text) are dynamic axes.
The graph takes the task's batch features (pixel_values; input_ids + attention_mask) and returns logits.
A model torch.onnx cannot export (torch.ao's int8 kernels among them) raises Unsupported with torch's
reason. int8 (`quantize_int8`): onnxruntime's dynamic quantization of the exported fp32 graph, the transformer
classifiers' int8 (issue 36: as small as torch.ao's, faster and closer to fp32; docs/benchmarks/compression.md);
`OnnxModel` puts either behind what the pipeline calls on a PyTorch model: model(**features).logits.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from finetune.data.heads import Heads
from finetune.errors import Unsupported

INT8_MODEL = "model.int8.onnx"  # what an int8 transformer folder holds instead of model.safetensors

DYNAMIC = {"pixel_values": {0: "batch"}, "input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
           "token_type_ids": {0: "batch", 1: "sequence"}}


class _Logits(nn.Module):
    def __init__(self, model: nn.Module, names: list[str]):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *features):
        return self.model(**dict(zip(self.names, features))).logits


def export(model: nn.Module, batch: dict[str, torch.Tensor], path: Path) -> None:
    """Write model (CPU) as ONNX to path, traced in eval mode on batch (features only, no labels). The exporter puts
    back the wrapper's mode afterwards, so the wrapper is made in eval mode: model stays in eval."""
    if isinstance(model, OnnxModel):
        raise Unsupported(f"it already is an onnxruntime model ({model.path.name})")
    names = list(batch)
    try:
        with torch.no_grad():
            torch.onnx.export(_Logits(model, names).eval(), tuple(batch[n].contiguous() for n in names), str(path), input_names=names,
                              output_names=["logits"], dynamic_axes={n: DYNAMIC.get(n, {0: "batch"}) for n in names} | {"logits": {0: "batch"}},
                              dynamo=False)
    except Exception as error:  # an operator without an ONNX symbol, an untraceable forward
        raise Unsupported(f"torch.onnx could not export {type(model).__name__}: {str(error).splitlines()[0][:300]}") from None


def session(path: Path, threads: int):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    # idle threads must not busy-wait after a run: they took the cores from whatever ran next (PyTorch measured 2-3x
    # slower at batch 1 right after an onnxruntime call; bench/int8_replacements.py), which skews every timing that
    # interleaves models and slows a process that mixes onnxruntime with other work; a steady stream loses ~nothing
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def runner(onnx_session):
    """Call it with a batch of torch features; returns the logits as a numpy array."""
    wanted = [i.name for i in onnx_session.get_inputs()]
    return lambda batch: onnx_session.run(None, {name: batch[name].contiguous().numpy() for name in wanted})[0]


def quantize_int8(model: nn.Module, batch: dict[str, torch.Tensor], path: Path, embeddings: bool) -> dict:
    """model exported (export()) and quantized into path by onnxruntime: int8 weights per output channel, activations
    quantized on the fly per tensor (as torch.ao's dynamic int8); with embeddings, the lookup tables (Gather) too."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32 = path.with_name(f"{path.name}.fp32")
    try:
        export(model, batch, fp32)
        quantize_dynamic(str(fp32), str(path), per_channel=True, weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul", "Gather"] if embeddings else ["MatMul"])
    finally:
        fp32.unlink(missing_ok=True)
    return {"runtime": "onnxruntime", "scheme": "dynamic (weights int8 per output channel, activations quantized on the fly)",
            "embeddings_int8": embeddings}


class OnnxModel:
    """An ONNX classifier (an int8 folder's model.int8.onnx, or `finetune export --onnx`'s model.onnx) behind what the
    pipeline calls on a PyTorch one: model(**features).logits, .eval(), parameter_count()."""

    def __init__(self, path: Path):
        self.path, self.threads = path, None

    def run(self, features: dict[str, torch.Tensor]) -> np.ndarray:
        if self.threads != torch.get_num_threads():  # follows torch.set_num_threads, as the PyTorch models it stands in for
            self.threads = torch.get_num_threads()
            self._run = runner(session(self.path, self.threads))
        return self._run(features)

    def eval(self):
        return self

    def parameters(self):
        return iter(())

    def parameter_count(self) -> int:
        """The graph's weights (int8 or fp32 matrices, biases, norms); not the quantizer's scales and zero points."""
        import onnx

        graph = onnx.load(str(self.path), load_external_data=False).graph
        weights = [w for w in graph.initializer if not w.name.endswith(("_scale", "_zero_point")) and w.data_type != onnx.TensorProto.INT64]
        return int(sum(np.prod(w.dims, dtype=np.int64) for w in weights))

    def __call__(self, **features):
        return SimpleNamespace(logits=torch.from_numpy(self.run(features)))


def probabilities(run, batches, heads: Heads, target: dict | None = None) -> np.ndarray:
    """Class probabilities of every batch; several heads: one softmax per head (finetune/data/heads.py), side by side, a
    number head's prediction in its units; a numeric label (its `target`, finetune/data/numbers.py): the predictions in
    its units, rows x 1."""
    def in_units(values, spec):
        return np.asarray(values, dtype=np.float64).reshape(len(values), -1) * spec["std"] + spec["mean"]

    chunks = []
    for batch in batches:
        logits = run(batch)
        if target is not None:
            chunks.append(in_units(logits, target))
            continue
        parts = heads.columns(logits).items() if heads.multi else [(None, logits)]
        chunks.append(np.concatenate([in_units(part, heads.targets[head]) if head in heads.targets else _softmax(part)
                                      for head, part in parts], axis=1))
    return np.concatenate(chunks)


def _softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)
