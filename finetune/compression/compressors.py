"""How a family of models gets smaller: the compress stage's one interface to int8, pruning and students.

A classifier task gives the Compressor for its teacher's family (ClassificationTask.compressor); the compress stage runs
the methods in compress.methods through it and never looks inside the model. A method that does not fit the model
raises Unsupported with the reason: the stage records it as skipped and goes on with the others.
TransformerCompressor serves Hugging Face transformers (text models, ViT); convnets.py serves CNNs (torchvision,
EfficientNet-Lite: the image models).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from torch import nn

from finetune.config.sections import Compress
from finetune.errors import Unsupported, UserError


class Compressor:
    """Every method unsupported: a family overrides the ones it has."""
    reason = "no compression method fits this model"

    def __init__(self, models):
        self.models = models  # the task's Models (finetune/models/base.py): what rebuilds a saved architecture

    def quantize(self, model: nn.Module, calibration: list[dict], config: Compress, folder: Path) -> dict:
        """Write an int8 copy of model into folder (which already holds the teacher's other files); facts for the report."""
        raise Unsupported(self.reason)

    def load_quantized(self, folder: Path) -> nn.Module:
        raise Unsupported(self.reason)

    def prune(self, model: nn.Module, config: Compress, example: dict) -> Callable[[], None]:
        """Prune model in place; returns what makes the pruning permanent after the recovery training."""
        raise Unsupported(self.reason)

    def pruning_facts(self, teacher: nn.Module, pruned: nn.Module) -> dict:
        return {}

    def student(self, teacher: nn.Module, config: Compress, example: dict) -> tuple[nn.Module, list[int]]:
        """(a smaller copy of teacher to train on its soft labels, the teacher's blocks it keeps)."""
        raise Unsupported(self.reason)


class TransformerCompressor(Compressor):
    """Dynamic int8 with onnxruntime (finetune/compression/onnx_export.py; torch.ao's eager int8, still the causal LM's
    in quantize.py, is deprecated, and measured slower and further from fp32 on the text model), FFN-neuron or
    unstructured pruning (finetune/compression/prune.py), a student of every other layer (finetune/compression/distill.py)."""

    def quantize(self, model, calibration, config, folder):
        from finetune.compression import onnx_export

        return onnx_export.quantize_int8(model, calibration[0], folder / onnx_export.INT8_MODEL, config.quantize.embeddings)

    def load_quantized(self, folder):
        from finetune.compression import onnx_export

        return onnx_export.OnnxModel(folder / onnx_export.INT8_MODEL)

    def prune(self, model, config, example):
        from finetune.compression import prune

        structure = config.prune.structure
        if structure not in prune.STRUCTURES:
            raise Unsupported(f"compress.prune.structure {structure} is for CNNs; transformers take {sorted(prune.STRUCTURES)}")
        try:
            return prune.STRUCTURES[structure](model, config.prune.sparsity)
        except (ValueError, AttributeError) as error:
            raise Unsupported(f"compress.prune.structure {structure}: {error}; try `unstructured`") from None

    def pruning_facts(self, teacher, pruned):
        from finetune.compression import prune

        return prune.sparsity(teacher, pruned)

    def student(self, teacher, config, example):
        from finetune.compression import distill
        from finetune.models import anatomy

        try:
            layers = distill.student_layers(len(anatomy.blocks(teacher) or []), config.distill.layers)
        except ValueError as error:  # the params are wrong: an error, not a skip
            raise UserError(str(error)) from None
        try:
            return distill.make_student(teacher, layers), layers
        except ValueError as error:
            raise Unsupported(str(error)) from None


def parameter_count(model: nn.Module) -> int:
    """Parameters; an onnxruntime model (onnx_export.OnnxModel: every int8 model) counts its graph's weights."""
    if hasattr(model, "parameter_count"):
        return model.parameter_count()
    return int(sum(p.numel() for p in model.parameters()))
