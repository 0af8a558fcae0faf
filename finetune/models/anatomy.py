"""Where a model's layers are, for any model family: the blocks bottom-up, the input group before them
(embeddings of a transformer, the stem of a CNN) and the head after them (pooler, classifier...).

Strategies (freezing, layer-wise learning rates, gradual unfreezing, LoRA's trained head), BatchNorm
handling and layer-dropping distillation all ask this module, never a model's attribute names. The
blocks are found by the first family that recognises the model:
- Hugging Face default: the ModuleList that is config.num_hidden_layers long (BERT, MiniLM, ViT...);
- torchvision ResNet-style: the stages layer1..layer4;
- EfficientNet-Lite (efficientnet-lite-pytorch): its `_blocks`;
- torchvision `features` models (MobileNet, EfficientNet, ConvNeXt, VGG...): features[1:] (features[0] is the stem);
- otherwise the ModuleList holding the most parameters, if it has >= 2 entries (Hugging Face ResNet/ConvNeXt stages).
A model none of them recognises (e.g. ALBERT, one shared layer) has no blocks: it trains as one group.
To support another family, add a (name, finder) pair to FAMILIES.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def _hugging_face(model: nn.Module) -> list[nn.Module] | None:
    depth = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    if not depth:
        return None
    return next((list(m) for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) == depth), None)


def _resnet_stages(model: nn.Module) -> list[nn.Module] | None:
    owner = next((m for m in model.modules() if all(hasattr(m, f"layer{i}") for i in range(1, 5)) and hasattr(m, "fc")), None)
    return [getattr(owner, f"layer{i}") for i in range(1, 5)] if owner is not None else None


def _efficientnet_lite(model: nn.Module) -> list[nn.Module] | None:
    owner = next((m for m in model.modules() if isinstance(getattr(m, "_blocks", None), nn.ModuleList)), None)
    return list(owner._blocks) if owner is not None else None


def _features(model: nn.Module) -> list[nn.Module] | None:
    owner = next((m for m in model.modules() if isinstance(getattr(m, "features", None), nn.Sequential)), None)
    return list(owner.features)[1:] if owner is not None and len(owner.features) > 2 else None


def _largest_list(model: nn.Module) -> list[nn.Module] | None:
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) >= 2]
    if not lists:
        return None
    return list(max(lists, key=lambda m: sum(p.numel() for p in m.parameters())))


FAMILIES: list[tuple[str, Callable[[nn.Module], list[nn.Module] | None]]] = [
    ("hugging face", _hugging_face),
    ("resnet", _resnet_stages),
    ("efficientnet-lite", _efficientnet_lite),
    ("features", _features),
    ("largest module list", _largest_list),
]


def blocks(model: nn.Module) -> list[nn.Module] | None:
    """The model's blocks bottom-up, or None when no family recognises it."""
    for _, finder in FAMILIES:
        found = finder(model)
        if found:
            return found
    return None


def block_list(model: nn.Module) -> tuple[nn.Module, str, nn.Module]:
    """(parent, attribute, the ModuleList or Sequential holding exactly the blocks): what a layer-dropping
    student replaces. ValueError when the blocks are not one list (e.g. ResNet's layer1..layer4)."""
    found = blocks(model)
    for name, module in model.named_modules():
        if found and name and isinstance(module, (nn.ModuleList, nn.Sequential)) and len(module) == len(found) \
                and all(a is b for a, b in zip(module, found)):
            parent, _, attribute = name.rpartition(".")
            return model.get_submodule(parent), attribute, module
    raise ValueError(f"the blocks of {type(model).__name__} are not one list of layers a student could be taken from")


def input_group_name(model: nn.Module) -> str:
    try:
        embeddings = model.get_input_embeddings()
    except (AttributeError, NotImplementedError):
        embeddings = None
    return "embeddings" if isinstance(embeddings, nn.Embedding) else "stem"


def _group_names(model: nn.Module, found: list[nn.Module]) -> list[str]:
    return [input_group_name(model), *(f"layer.{i}" for i in range(len(found))), "head"]


def layer_groups(model: nn.Module) -> dict[str, list[tuple[str, nn.Parameter]]] | None:
    """Bottom-up: input group, layer.0 .. layer.<depth-1>, head (parameters by name), or None."""
    found = blocks(model)
    if found is None:
        return None
    names = _group_names(model, found)
    owner = {id(p): f"layer.{i}" for i, block in enumerate(found) for p in block.parameters()}
    # a language model's output layer is its head even when it shares its matrix with the input embeddings (tied: the
    # one parameter is listed first under the embeddings), so linear_probe trains it
    owner |= {id(p): names[-1] for p in _output_weights(model)}
    groups = {name: [] for name in names}
    after_blocks = False
    for name, parameter in model.named_parameters():
        group = owner.get(id(parameter))
        after_blocks = after_blocks or group not in (None, names[-1])
        groups[group or (names[-1] if after_blocks else names[0])].append((name, parameter))
    return groups


def _output_weights(model: nn.Module) -> list[nn.Parameter]:
    try:
        output = model.get_output_embeddings()
    except (AttributeError, NotImplementedError):
        return []
    return [output.weight] if isinstance(output, nn.Linear) else []


def batchnorm_groups(model: nn.Module) -> dict[str, list[_BatchNorm]]:
    """Every BatchNorm layer, by the layer group it sits in ("all" when the model has no blocks)."""
    found = blocks(model)
    norms = [(name, m) for name, m in model.named_modules() if isinstance(m, _BatchNorm)]
    if found is None:
        return {"all": [m for _, m in norms]} if norms else {}
    names = _group_names(model, found)
    owner = {id(m): f"layer.{i}" for i, block in enumerate(found) for m in block.modules()}
    groups: dict[str, list[_BatchNorm]] = {}
    after_blocks = False
    for _, module in model.named_modules():
        group = owner.get(id(module))
        after_blocks = after_blocks or group is not None
        if isinstance(module, _BatchNorm):
            groups.setdefault(group or (names[-1] if after_blocks else names[0]), []).append(module)
    return groups


def head_modules(model: nn.Module) -> list[str]:
    """Names of the modules holding the head's parameters (what LoRA trains in full, beside the adapters)."""
    groups = layer_groups(model) or {}
    return sorted({name.rsplit(".", 1)[0] for name, _ in groups.get("head", [])})


# -- rebuilding a compressed CNN from its spec (finetune/compression/convnets.py makes them) --
SHAPE_ATTRIBUTES = ("in_channels", "out_channels", "groups", "num_features", "in_features", "out_features")
RESHAPED = (nn.Conv2d, nn.BatchNorm2d, nn.Linear)


def keep_blocks(net: nn.Module, layers: list[int]) -> None:
    """A student: net with only `layers` of its blocks, in place."""
    parent, attribute, found = block_list(net)
    kept = [found[i] for i in layers]
    setattr(parent, attribute, type(found)(*kept) if isinstance(found, nn.Sequential) else nn.ModuleList(kept))


def reshape(net: nn.Module, saved: dict[str, dict[str, int]], state: dict[str, torch.Tensor]) -> None:
    """Give a freshly built net a pruned net's shapes (convnet_compress.shapes, and its state dict) before loading its weights."""
    for name, attributes in saved.items():
        module = net.get_submodule(name)
        for attribute, value in attributes.items():
            setattr(module, attribute, value)
        for key, tensor in list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False)):
            wanted = state.get(f"{name}.{key}")
            if wanted is not None and wanted.shape != tensor.shape:
                empty = torch.empty(wanted.shape, dtype=tensor.dtype)
                setattr(module, key, nn.Parameter(empty, requires_grad=tensor.requires_grad) if isinstance(tensor, nn.Parameter) else empty)
