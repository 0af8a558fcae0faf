"""Making a CNN smaller: static int8, channel pruning, a student with fewer blocks. Saved without pickle.

- Static int8 (weights AND activations): torch.ao FX graph mode, onednn backend. `prepare_fx` folds
  conv+BatchNorm(+ReLU) and inserts observers; calibration batches fix the activation ranges; `convert_fx`
  swaps in int8 kernels. Why FX + onednn and not PT2E (measured on EfficientNet-Lite0, 64x64, 2 threads,
  BENCHMARKS.md): the fbgemm/x86 engines ran depthwise convolutions 4-15x SLOWER than fp32; PT2E's
  reference graph is fast only after torch.compile (a 60 s compile and a C++ compiler at every load), and
  compiled it was no faster than compiled fp32, so its gain is the compiler's, not int8's.
  Saved as safetensors: int8 weights + per-channel scales, activation scales, fp32 biases; `load` rebuilds
  the fp32 net, prepares and converts it the same way, then puts the saved weights and scales in: the same
  int8 model, no pickled objects.
- Channel pruning: torch-pruning's dependency graph removes the same `sparsity` share of every
  convolution's output channels with the smallest L1 norm, and everything coupled to them (BatchNorms,
  depthwise groups, residual adds, the next layer's inputs); the classifier's outputs stay. Every conv,
  BatchNorm and linear layer's new shape is recorded (`shapes`) so anatomy.reshape rebuilds it from the spec.
- Student: the teacher without the blocks that keep their input's shape (the repeats of a stage, whose
  residual add makes them skippable), those kept copied from the teacher; anatomy.keep_blocks rebuilds it.
"""
from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from finetune.compression.compressors import Compressor
from finetune.errors import Unsupported, UserError
from finetune.models import anatomy

ENGINE = "onednn"
WEIGHTS = "int8.safetensors"
MIN_CALIBRATION_IMAGES = 32
LINEAR_SUFFIX = "._packed_params._packed_params"  # a quantized Linear's packed (weight, bias) in the state dict


@contextlib.contextmanager
def _engine(name: str | None = None):
    """onednn while preparing, converting and running: packed int8 weights belong to the engine that packed them."""
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = name or ENGINE
    try:
        yield
    finally:
        torch.backends.quantized.engine = previous


class Int8Net(nn.Module):
    """The converted int8 graph, run under the engine that packed its weights."""

    def __init__(self, graph: nn.Module, engine: str):
        super().__init__()
        self.graph, self.engine = graph, engine

    def forward(self, pixel_values):
        with _engine(self.engine):
            return self.graph(pixel_values)

    def convolution_parameters(self) -> int:
        """Weights and biases of the convolutions torch.fx packed as graph attributes (outside any module)."""
        return sum(w.numel() + (b.numel() if b is not None else 0) for name, (w, b, _) in _packed(self.graph).items()
                   if isinstance(getattr(self.graph, name, None), torch.ScriptObject))


def _plain_convolutions(net: nn.Module) -> nn.Module:
    """EfficientNet's "same"-padding convolutions (a Conv2d subclass that pads in forward) as padding + nn.Conv2d:
    torch.fx traces into the subclass and sees a functional conv, which it can neither fold BatchNorm into nor
    run as one int8 kernel (measured: 0.6x the fp32 speed before this, see BENCHMARKS.md)."""
    for name, module in list(net.named_modules()):
        if type(module) is not nn.Conv2d and isinstance(module, nn.Conv2d) and hasattr(module, "static_padding"):
            conv = nn.Conv2d(module.in_channels, module.out_channels, module.kernel_size, module.stride, 0, module.dilation,
                             module.groups, module.bias is not None)
            conv.load_state_dict({key: value for key, value in module.state_dict().items() if not key.startswith("static_padding")})
            parent, _, attribute = name.rpartition(".")
            setattr(net.get_submodule(parent) if parent else net, attribute, nn.Sequential(module.static_padding, conv))
    return net


def _observed(net: nn.Module, example: torch.Tensor) -> nn.Module:
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import prepare_fx

    with _engine():
        try:
            return prepare_fx(_plain_convolutions(copy.deepcopy(net)).eval(), get_default_qconfig_mapping(ENGINE), (example,))
        except Exception as error:  # torch.fx cannot trace data-dependent control flow
            raise Unsupported(f"{type(net).__name__} cannot be traced by torch.fx for static int8: {str(error).splitlines()[0]}") from None


def _converted(observed: nn.Module) -> Int8Net:
    from torch.ao.quantization.quantize_fx import convert_fx

    with _engine():
        return Int8Net(convert_fx(copy.deepcopy(observed)).eval(), ENGINE)


def quantize(net: nn.Module, batches: list[torch.Tensor]) -> Int8Net:
    images = sum(len(batch) for batch in batches)
    if images < MIN_CALIBRATION_IMAGES:
        raise Unsupported(f"calibration data too small: {images} train images, static int8 needs at least {MIN_CALIBRATION_IMAGES} "
                          "to estimate activation ranges")
    observed = _observed(net, batches[0][:1])
    with torch.inference_mode():
        for batch in batches:
            observed(batch)
    return _converted(observed)


def _packed(graph: nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor | None, Callable]]:
    """{key: (int8 weight, bias, what puts a new weight and bias in)} of every int8 layer: quantized Conv2d / Linear
    modules, and the packed weights of convolutions torch.fx saw as functions (attributes of the graph)."""
    packed = {}
    for name, value in graph.state_dict().items():
        if isinstance(value, torch.ScriptObject):
            def put(weight, bias, name=name, old=value):
                setattr(graph, name, torch.ops.quantized.conv2d_prepack(weight, bias, old.stride(), old.padding(), old.dilation(), old.groups()))
            packed[name] = (*torch.ops.quantized.conv2d_unpack(value), put)
        elif name.endswith(LINEAR_SUFFIX) or (name.endswith(".weight") and isinstance(value, torch.Tensor) and value.is_quantized):
            module = graph.get_submodule(name.removesuffix(LINEAR_SUFFIX).removesuffix(".weight"))
            packed[name.removesuffix(LINEAR_SUFFIX).removesuffix(".weight")] = (module.weight(), module.bias(), module.set_weight_bias)
    return packed


def _float_state(graph: nn.Module, packed: dict, keep_vars: bool = False) -> dict[str, torch.Tensor]:
    """Every float tensor outside the int8 layers' weights and biases (activation scales, unquantized layers)."""
    inside = {f"{key}.{part}" for key in packed for part in ("weight", "bias")}
    return {name: value for name, value in graph.state_dict(keep_vars=keep_vars).items()
            if isinstance(value, torch.Tensor) and not value.is_quantized and name not in inside and not name.endswith(LINEAR_SUFFIX)}


def save(model: Int8Net, folder: Path) -> None:
    """int8 weights as int8 tensors + per-channel scales; activation scales and biases as they are."""
    packed = _packed(model.graph)
    tensors = _float_state(model.graph, packed)
    for name, (weight, bias, _) in packed.items():
        tensors |= {f"{name}.qweight": weight.int_repr(), f"{name}.scales": weight.q_per_channel_scales(),
                    f"{name}.zero_points": weight.q_per_channel_zero_points()}
        if bias is not None:
            tensors[f"{name}.bias"] = bias.detach()
    save_file({name: value.contiguous() for name, value in tensors.items()}, folder / WEIGHTS)


def load(net: nn.Module, image_size: int, folder: Path) -> Int8Net:
    """The int8 net saved by `save`, rebuilt from the fp32 architecture it was made from: prepared and
    converted the same way, then every int8 weight and activation scale replaced by the saved ones."""
    example = torch.zeros(1, 3, image_size, image_size)
    observed = _observed(net, example)
    with torch.inference_mode():
        observed(example)  # any ranges: every scale is overwritten below
    model, saved = _converted(observed), load_file(folder / WEIGHTS)
    graph = model.graph
    packed = _packed(graph)
    with _engine():
        for name, (_, _, put) in packed.items():
            put(torch._make_per_channel_quantized_tensor(saved.pop(f"{name}.qweight"), saved.pop(f"{name}.scales"),
                                                         saved.pop(f"{name}.zero_points"), 0), saved.pop(f"{name}.bias", None))
    state = _float_state(graph, packed, keep_vars=True)
    if set(state) != set(saved):
        raise ValueError(f"{folder / WEIGHTS} does not match the architecture: missing {sorted(set(state) - set(saved))[:5]}, "
                         f"unexpected {sorted(set(saved) - set(state))[:5]}")
    with torch.no_grad():
        for name, value in saved.items():
            owner, _, attribute = name.rpartition(".")
            module = graph.get_submodule(owner) if owner else graph
            if isinstance(getattr(module, attribute, None), (int, float)):  # quantized modules keep their output scale as a number
                setattr(module, attribute, type(getattr(module, attribute))(value.item()))
            else:
                state[name].copy_(value)
    return model


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
        save(quantize(model.net, [batch["pixel_values"] for batch in calibration]), folder)
        return {"scheme": "static: weights and activations int8, conv+BatchNorm(+ReLU) folded", "backend": f"torch.ao FX graph mode, {ENGINE}",
                "calibration_images": sum(len(batch["pixel_values"]) for batch in calibration)}

    def load_quantized(self, folder):
        model = self.models.load_architecture(str(folder))  # folder holds the teacher's spec
        model.net = load(model.net, model.spec["image_size"], folder)
        return model.eval()

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
