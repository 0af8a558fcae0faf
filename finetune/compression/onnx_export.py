"""ONNX export of a classifier and its predictions with onnxruntime, beside PyTorch's.

Export: torch.onnx's TorchScript exporter (`dynamo=False`): 0.8 s for EfficientNet-Lite0 where the dynamo
exporter took 9-11 s (measured), same outputs; batch (and sequence length for text) are dynamic axes.
The graph takes the task's batch features (pixel_values; input_ids + attention_mask) and returns logits.
A model torch.onnx cannot export (torch.ao's int8 kernels among them) raises Unsupported with torch's
reason; for an int8 ONNX model, quantize the exported fp32 graph with onnxruntime.quantization.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from finetune.data.heads import Heads
from finetune.errors import Unsupported

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
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def runner(onnx_session):
    """Call it with a batch of torch features; returns the logits as a numpy array."""
    wanted = [i.name for i in onnx_session.get_inputs()]
    return lambda batch: onnx_session.run(None, {name: batch[name].contiguous().numpy() for name in wanted})[0]


def probabilities(run, batches, heads: Heads) -> np.ndarray:
    """Class probabilities of every batch; several heads: one softmax per head (finetune/data/heads.py), side by side."""
    chunks = []
    for batch in batches:
        logits = run(batch)
        parts = heads.columns(logits).values() if heads.multi else [logits]
        chunks.append(np.concatenate([_softmax(part) for part in parts], axis=1))
    return np.concatenate(chunks)


def _softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)
