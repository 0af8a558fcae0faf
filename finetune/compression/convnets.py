"""Making a CNN smaller: static int8, channel pruning, a student with fewer blocks. Saved without pickle.

- Static int8 (weights AND activations): onnxruntime's static quantization of the teacher's ONNX export, QDQ format,
  7-bit int8 weights per output channel (`reduce_range`: x86 CPUs without VNNI multiply uint8 x int8 pairs with
  VPMADDUBSW, whose int16 sums saturate on full-range weights; 7 bits cannot: on an AVX2 EPYC the full-range model lost
  1.68 points of Fashion-MNIST accuracy, the 7-bit one 0.13, at the same speed; bench/cnn_int8_runtimes.py,
  docs/benchmarks/compression.md. A model quantized once runs on any x86 CPU, so this holds on VNNI machines too),
  uint8 activations with MinMax ranges from the calibration batches
  (compress.quantize.calibration_batches x 32 train images), after onnxruntime's own pre-processing (shape inference,
  BatchNorm folded into the convolutions). Written as model.int8.onnx and run by onnxruntime
  (finetune/compression/onnx_export.py). It replaced torch.ao's FX static int8 (deprecated by PyTorch) at 8586449: on
  Fashion-MNIST's EfficientNet-Lite0 at 64 px it kept 98.2 % of the fp32 predictions (torch.ao: 87.4 %) at 6x the
  PyTorch teacher's speed at batch 1 and 3x at batch 32 (torch.ao: 1.1x / 1.6x; docs/benchmarks/compression.md).
- Channel pruning: torch-pruning's dependency graph removes the same `sparsity` share of every
  convolution's output channels with the smallest L1 norm, and everything coupled to them (BatchNorms,
  depthwise groups, residual adds, the next layer's inputs); the classifier's outputs stay. Every conv,
  BatchNorm and linear layer's new shape is recorded (`shapes`) so anatomy.reshape rebuilds it from the spec.
- Student: the teacher without the blocks that keep their input's shape (the repeats of a stage, whose
  residual add makes them skippable), those kept copied from the teacher; anatomy.keep_blocks rebuilds it.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from finetune.compression import onnx_export
from finetune.compression.compressors import Compressor
from finetune.errors import Unsupported, UserError
from finetune.models import anatomy

MIN_CALIBRATION_IMAGES = 32


def prune_channels(net: nn.Module, head: str, sparsity: float, example: torch.Tensor) -> None:
    """Remove `sparsity` of every convolution's channels in place (the head's outputs kept)."""
    import torch_pruning as tp

    for name, module in net.named_modules():
        if isinstance(module, nn.Conv2d) and module.groups == 1 and int(module.out_channels * (1 - sparsity)) < 1:
            raise Unsupported(f"compress.prune.sparsity {sparsity} would remove every channel of {name} ({module.out_channels} channels)")
    pruner = tp.pruner.MagnitudePruner(net, example, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=sparsity,
                                       ignored_layers=[net.get_submodule(head)])
    pruner.step()


def shapes(net: nn.Module) -> dict[str, dict[str, int]]:
    """Every conv, BatchNorm and linear layer's shape, for anatomy.reshape to rebuild the pruned net."""
    return {name: {a: int(getattr(module, a)) for a in anatomy.SHAPE_ATTRIBUTES if hasattr(module, a)}
            for name, module in net.named_modules() if isinstance(module, anatomy.RESHAPED)}


def shape_changing_blocks(net: nn.Module, example: torch.Tensor) -> list[int]:
    """Indices of the blocks whose output shape differs from their input's (a student must keep them)."""
    found, changing, hooks = anatomy.blocks(net) or [], [], []
    for index, block in enumerate(found):
        def hook(module, inputs, output, index=index):
            if inputs[0].shape != output.shape:
                changing.append(index)
        hooks.append(block.register_forward_hook(hook))
    with torch.no_grad():
        net.eval()(example)
    for handle in hooks:
        handle.remove()
    return sorted(set(changing))


def student_blocks(net: nn.Module, chosen: list[int] | None, example: torch.Tensor) -> list[int]:
    """The blocks a student keeps: `chosen`, or only those that change the shape. Params that cannot work are a
    UserError; a net this cannot shorten is Unsupported."""
    try:
        anatomy.block_list(net)
    except ValueError as error:
        raise Unsupported(str(error)) from None
    depth, needed = len(anatomy.blocks(net)), shape_changing_blocks(net, example)
    layers = chosen if chosen is not None else needed
    if not layers or sorted(set(layers)) != list(layers) or layers[0] < 0 or layers[-1] >= depth:
        raise UserError(f"compress.distill.layers {chosen} must be increasing block indices in [0, {depth - 1}]")
    if missing := [i for i in needed if i not in layers]:
        raise UserError(f"compress.distill.layers {chosen} drops blocks {missing}, which change the feature map's shape: "
                          f"a student must keep {needed}")
    if len(layers) == depth:
        raise Unsupported(f"every block of the teacher changes the shape ({depth} blocks): no smaller student of the same family")
    return layers


def _last_linear(net: nn.Module) -> str:
    return [name for name, module in net.named_modules() if isinstance(module, nn.Linear)][-1]


class ConvNetCompressor(Compressor):
    """For a task's CNN wrapper: `.net` (the torchvision / EfficientNet-Lite network) and `.spec` (how the task
    rebuilds it: the pruned shapes and the student's blocks are added to it)."""

    def quantize(self, model, calibration, config, folder):
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process

        class Batches(CalibrationDataReader):
            def __init__(self):
                self.batches = iter([{"pixel_values": batch["pixel_values"].numpy()} for batch in calibration])

            def get_next(self):
                return next(self.batches, None)

        images = sum(len(batch["pixel_values"]) for batch in calibration)
        if images < MIN_CALIBRATION_IMAGES:
            raise Unsupported(f"calibration data too small: {images} train images, static int8 needs at least {MIN_CALIBRATION_IMAGES} "
                              "to estimate activation ranges")
        target = folder / onnx_export.INT8_MODEL
        fp32, prepared = (target.with_name(f"{target.name}.{step}") for step in ("fp32", "prepared"))
        try:
            onnx_export.export(model, calibration[0], fp32)
            quant_pre_process(str(fp32), str(prepared))
            quantize_static(str(prepared), str(target), Batches(), quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        finally:
            for path in (fp32, prepared):
                path.unlink(missing_ok=True)
        return {"runtime": "onnxruntime", "scheme": "static (QDQ): weights int8 (7-bit) per output channel, activations uint8 from calibrated "
                "ranges, BatchNorm folded", "calibration_images": images}

    def load_quantized(self, folder):
        return onnx_export.OnnxModel(folder / onnx_export.INT8_MODEL)

    def prune(self, model, config, example):
        if config.prune.structure != "channels":
            raise Unsupported(f"compress.prune.structure {config.prune.structure} is for transformers; CNNs take `channels`")
        prune_channels(model.net, _last_linear(model.net), config.prune.sparsity, example["pixel_values"][:1])
        model.spec = {**model.spec, "pruned_shapes": shapes(model.net)}
        model.to(memory_format=torch.channels_last)
        return lambda: None

    def pruning_facts(self, teacher, pruned):
        def channels(model) -> int:
            return sum(m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d))
        return {"channels_removed": round(1 - channels(pruned) / channels(teacher), 4),
                "parameters_removed": round(1 - sum(p.numel() for p in pruned.parameters()) / sum(p.numel() for p in teacher.parameters()), 4)}

    def student(self, teacher, config, example):
        layers = student_blocks(teacher.net, config.distill.layers, example["pixel_values"][:1])
        student = copy.deepcopy(teacher)
        anatomy.keep_blocks(student.net, layers)
        student.spec = {**teacher.spec, "blocks_kept": layers}
        return student, layers
