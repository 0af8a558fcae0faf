"""The deletion test of an attribution's faithfulness (used by every explainer: tokens, pixels, prompts): delete what
the attribution ranks highest and see whether the explained score drops more than when deleting as many random
features (`beats_random` decides over the examples, with an interval). Model-agnostic: `probability` is any score of a
(1, T) id tensor."""
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


def beats_random(margins) -> dict:
    """Whether a method's top features matter more than random ones over the examples (issue 39: the deletion test decides
    what is offered as an explanation): margins are each example's (drop for the top-k) - (drop for k random features);
    their mean with a percentile-bootstrap 95 % interval over the examples; faithful only when the interval lies above
    zero, None when the examples cannot tell (fewer than 2, or all alike)."""
    from scipy.stats import bootstrap

    from finetune.scoring import uncertainty

    margins = np.asarray(margins, dtype=float)
    if len(margins) < 2 or np.ptp(margins) == 0:
        return {"margin": float(np.mean(margins)) if len(margins) else None, "ci95": None, "faithful": None}
    found = bootstrap((margins,), np.mean, confidence_level=uncertainty.LEVEL, n_resamples=uncertainty.DRAWS, method="percentile",
                      random_state=uncertainty.SEED).confidence_interval
    return {"margin": round(float(np.mean(margins)), 5), "ci95": {"low": round(float(found.low), 5), "high": round(float(found.high), 5)},
            "faithful": bool(found.low > 0)}
