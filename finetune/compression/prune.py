"""Magnitude pruning of a fine-tuned transformer, in place. Two structures (compress.prune.structure):

- unstructured: global L1 (torch.nn.utils.prune.global_unstructured) over every linear layer but the
  classifier head: the smallest `sparsity` share of all their weights, ranked together, set to 0.
  The masks stay attached while a recovery fine-tune runs (zeros stay zeros); `finish()` makes them
  permanent. Dense kernels multiply zeros like any weight: neither size nor latency drop.
- ffn_neurons: every layer keeps the same (1 - sparsity) share of its feed-forward neurons, those
  with the largest |w_in|_1 * |w_out|_1; the two FFN matrices really shrink and
  the config's feed-forward size follows (intermediate_size; Whisper's encoder_ffn_dim), so the model is smaller,
  faster and loads with from_pretrained.
  (transformers 5 removed `prune_heads`, so attention heads are not pruned.)
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn.utils import prune

from finetune.models import anatomy


def prunable(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """Every linear layer but the classifier head (the one with num_labels outputs)."""
    return [(m, "weight") for m in model.modules() if isinstance(m, nn.Linear) and m.out_features != model.config.num_labels]


def unstructured(model: nn.Module, sparsity: float) -> Callable[[], None]:
    targets = prunable(model)
    prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=sparsity)
    return lambda: [prune.remove(module, name) for module, name in targets]


def _linear_named(block: nn.Module, test) -> str:
    names = [name for name, m in block.named_modules() if isinstance(m, nn.Linear) and test(m)]
    if len(names) != 1:
        raise ValueError(f"cannot find the feed-forward pair of {type(block).__name__} (candidates {names})")
    return names[0]


def _keep(linear: nn.Linear, index: torch.Tensor, dim: int) -> nn.Linear:
    """A smaller copy of linear keeping `index` along its output (dim 0) or input (dim 1) features."""
    weight = linear.weight.detach().index_select(dim, index)
    smaller = nn.Linear(weight.shape[1], weight.shape[0], bias=linear.bias is not None)
    with torch.no_grad():
        smaller.weight.copy_(weight)
        if linear.bias is not None:
            smaller.bias.copy_(linear.bias[index] if dim == 0 else linear.bias)
    return smaller


# where a config keeps its feed-forward size: BERT, ViT and most encoders; Whisper's encoder (an audio classifier has no decoder)
FFN_SIZES = ("intermediate_size", "encoder_ffn_dim")


def ffn_size_key(config) -> str:
    key = next((name for name in FFN_SIZES if hasattr(config, name)), None)
    if key is None:
        raise ValueError(f"{type(config).__name__} names no feed-forward size ({' or '.join(FFN_SIZES)})")
    return key


def ffn_neurons(model: nn.Module, sparsity: float) -> Callable[[], None]:
    key = ffn_size_key(model.config)
    size = getattr(model.config, key)
    kept = max(1, round(size * (1 - sparsity)))
    for block in anatomy.blocks(model):
        up_name = _linear_named(block, lambda m: m.out_features == size)
        down_name = _linear_named(block, lambda m: m.in_features == size)
        up, down = block.get_submodule(up_name), block.get_submodule(down_name)
        importance = up.weight.detach().abs().sum(dim=1) * down.weight.detach().abs().sum(dim=0)
        index = importance.topk(kept).indices.sort().values
        for name, smaller in ((up_name, _keep(up, index, 0)), (down_name, _keep(down, index, 1))):
            parent, _, attribute = name.rpartition(".")
            setattr(block.get_submodule(parent), attribute, smaller)
    setattr(model.config, key, kept)
    return lambda: None


STRUCTURES = {"unstructured": unstructured, "ffn_neurons": ffn_neurons}


def sparsity(teacher: nn.Module, pruned: nn.Module) -> dict[str, float]:
    """Share of the teacher's weights that are zero or gone: in the prunable layers, and overall."""
    def nonzero(tensors) -> int:
        return int(sum((t != 0).sum().item() for t in tensors))

    layers = [m.weight for m, _ in prunable(teacher)]
    key = ffn_size_key(teacher.config)
    return {"ffn_neurons_removed": round(1 - getattr(pruned.config, key) / getattr(teacher.config, key), 4),
            "sparsity_pruned_layers": round(1 - nonzero(m.weight for m, _ in prunable(pruned)) / sum(w.numel() for w in layers), 4),
            "sparsity_all_parameters": round(1 - nonzero(pruned.parameters()) / sum(p.numel() for p in teacher.parameters()), 4)}
