"""The deletion test of an attribution's faithfulness (used by every explainer: tokens, pixels, prompts): delete what
the attribution ranks highest and see whether the explained score drops more than when deleting as many random
features. Model-agnostic: `probability` is any score of a (1, T) id tensor."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch


def deletion_drops(probability: Callable[[torch.Tensor], float], input_ids: torch.Tensor, order: list[int], k_max: int,
                   mask_id: int | None) -> np.ndarray:
    """p(x) - p(x with the first k positions of `order` replaced by mask_id, or removed from the sequence when
    mask_id is None), for k = 1..k_max (k is capped at len(order): a short text has fewer tokens to delete).
    `probability` is any score of the (1, T) ids: a class probability, a continuation's log-probability."""
    full = probability(input_ids)
    drops = []
    for k in range(1, k_max + 1):
        if mask_id is None:
            keep = torch.ones(input_ids.shape[1], dtype=torch.bool)
            keep[order[:k]] = False
            deleted = input_ids[:, keep]
        else:
            deleted = input_ids.clone()
            deleted[0, order[:k]] = mask_id
        drops.append(full - probability(deleted))
    return np.array(drops)


def faithfulness(probability: Callable[[torch.Tensor], float], input_ids: torch.Tensor, scores: np.ndarray, candidates: np.ndarray,
                 k_max: int, mask_id: int | None, rng: np.random.Generator, random_draws: int) -> tuple[np.ndarray, np.ndarray]:
    """(drops when deleting the top-k attributed tokens, mean drops over `random_draws` random k-token deletions);
    deleting is masking with mask_id, or removing the tokens when mask_id is None (see deletion_drops)."""
    positions = np.flatnonzero(candidates)
    top = positions[np.argsort(-scores[positions], kind="stable")].tolist()
    randoms = [deletion_drops(probability, input_ids, rng.permutation(positions).tolist(), k_max, mask_id) for _ in range(random_draws)]
    return deletion_drops(probability, input_ids, top, k_max, mask_id), np.mean(randoms, axis=0)
