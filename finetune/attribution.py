"""Token attributions for one example of a Hugging Face classifier, and the deletion test of their
faithfulness. Model-agnostic: anything with get_input_embeddings() and .logits works.

The explained quantity is the softmax probability of the predicted class, so attributions are in
probability units: IG's completeness says they sum to p(x) - p(baseline), and captum's
convergence delta is exactly how far from that the Riemann sum ended.
Baseline: every ordinary token replaced by [PAD], the special tokens ([CLS], [SEP]) kept.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from captum.attr import LayerGradientXActivation, LayerIntegratedGradients


@dataclass
class Example:
    input_ids: torch.Tensor  # (1, T)
    attention_mask: torch.Tensor  # (1, T)
    special: np.ndarray  # (T,) bool: [CLS]/[SEP]/padding, never attributed or deleted


def class_probability(model, example: Example) -> Callable[[torch.Tensor], torch.Tensor]:
    """Class probabilities (rows x classes) of a batch of variants of the example (captum picks the target column)."""
    def forward(input_ids: torch.Tensor) -> torch.Tensor:
        mask = example.attention_mask.expand(input_ids.shape[0], -1)
        return torch.softmax(model(input_ids=input_ids, attention_mask=mask).logits.float(), dim=-1)
    return forward


def integrated_gradients(model, example: Example, target: int, baseline_id: int, steps: int) -> tuple[np.ndarray, float]:
    """(per-token attribution, convergence delta) of p(target) w.r.t. the input embeddings."""
    baseline = torch.where(torch.from_numpy(example.special)[None], example.input_ids, baseline_id)
    method = LayerIntegratedGradients(class_probability(model, example), model.get_input_embeddings())
    attributions, delta = method.attribute(example.input_ids, baselines=baseline, target=target, n_steps=steps,
                                           return_convergence_delta=True)
    return attributions.sum(dim=-1)[0].detach().numpy(), float(delta.item())


def gradient_x_input(model, example: Example, target: int) -> np.ndarray:
    method = LayerGradientXActivation(class_probability(model, example), model.get_input_embeddings())
    return method.attribute(example.input_ids, target=target).sum(dim=-1)[0].detach().numpy()


def cls_attention(model, example: Example, layer: int) -> np.ndarray:
    """Attention the first ([CLS]) position pays to each token in `layer`, averaged over heads."""
    with torch.no_grad():
        outputs = model(input_ids=example.input_ids, attention_mask=example.attention_mask, output_attentions=True)
    if not getattr(outputs, "attentions", None):
        raise ValueError(f"{type(model).__name__} returns no attention weights")
    return outputs.attentions[layer][0].mean(dim=0)[0].numpy()


def deletion_drops(probability: Callable[[torch.Tensor], float], input_ids: torch.Tensor, order: list[int], k_max: int,
                   mask_id: int) -> np.ndarray:
    """p(x) - p(x with the first k positions of `order` replaced by mask_id), for k = 1..k_max
    (k is capped at len(order): a short text has fewer tokens to delete)."""
    full = probability(input_ids)
    drops = []
    for k in range(1, k_max + 1):
        deleted = input_ids.clone()
        deleted[0, order[:k]] = mask_id
        drops.append(full - probability(deleted))
    return np.array(drops)


def faithfulness(probability: Callable[[torch.Tensor], float], input_ids: torch.Tensor, scores: np.ndarray, candidates: np.ndarray,
                 k_max: int, mask_id: int, rng: np.random.Generator, random_draws: int) -> tuple[np.ndarray, np.ndarray]:
    """(drops when deleting the top-k attributed tokens, mean drops over `random_draws` random k-token deletions)."""
    positions = np.flatnonzero(candidates)
    top = positions[np.argsort(-scores[positions], kind="stable")].tolist()
    randoms = [deletion_drops(probability, input_ids, rng.permutation(positions).tolist(), k_max, mask_id) for _ in range(random_draws)]
    return deletion_drops(probability, input_ids, top, k_max, mask_id), np.mean(randoms, axis=0)
