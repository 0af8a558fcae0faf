"""Explaining a causal LM's continuation of a prompt: how much each PROMPT token contributes to the log-probability
of the continuation (e.g. the model's own greedy generation) and whether those scores are faithful (finetune/families/generative/report.py
shows them).

Features
- attribute(): captum's LLM attribution on token ids (no decode / re-encode round trip):
  "feature_ablation" (LLMAttribution + FeatureAblation): each prompt token in turn replaced by a baseline token, score =
  log p(continuation | prompt) - log p(continuation | prompt with that token replaced); one forward per prompt token;
  "layer_integrated_gradients" (LLMGradientAttribution + LayerIntegratedGradients on the input embeddings), from the
  prompt with every attributed token replaced by the baseline token; one IG of `steps` forward+backward passes PER
  CONTINUATION TOKEN (captum's design), so its cost is continuation length x steps. Its completeness gap is reported
  (convergence_delta: sum of scores minus the log-probability difference it should equal).
  Both give one score per prompt token in nats (summed over the continuation tokens; > 0: the token makes the
  continuation more likely) and the continuation-token x prompt-token matrix (captum computes it anyway).
- faithfulness(): REMOVE the top-k attributed prompt tokens from the sequence vs k random ones (mean over seeded draws)
  and compare the drops of the continuation's total log-probability (finetune.attribution.faithfulness, removing
  instead of masking). Removal is a different perturbation from feature ablation's replacement, so FA is not scored
  by its own yardstick.

Limits
- The tokenizer's special tokens in a prompt (a leading BOS; a chat conversation's turn markers, <|im_start|> and
  <|im_end|> in ChatML) are kept out of everything: no score (0, attributed False), never deleted, since a sequence
  without them is out of distribution for every position after (and the deletion test would reward whatever method
  ranked the markup first).
- The baseline token defaults to the tokenizer's unk, else pad, else eos token (<|endoftext|> for SmolLM2 and the
  test models: a token that carries no content of the prompt).
- The continuation is scored teacher-forced in one forward (captum's forward_in_tokens=False): the same
  log-probabilities as a token-by-token generation up to float noise, at 1/len(continuation) of the cost.
- One example per call, in fp32, on the model's device; IG runs all `steps` of one continuation token in one batch.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from captum.attr import FeatureAblation, LayerIntegratedGradients, LLMAttribution, LLMGradientAttribution, TextTokenInput

from finetune.attribution import deletion as attribution
from finetune.errors import UserError
from finetune.families.generative.scoring import token_scores

METHODS = ("feature_ablation", "layer_integrated_gradients")


@dataclass
class Attribution:
    scores: np.ndarray  # (P,) one per prompt token: the sum of per_token over the continuation; 0 where not attributed
    per_token: np.ndarray  # (C, P) continuation token x prompt token
    attributed: np.ndarray  # (P,) bool: False for a leading BOS
    baseline_id: int
    convergence_delta: float | None  # IG: sum(scores) - (log p(cont | prompt) - log p(cont | baseline prompt)); None for FA


class _TokenIdInput(TextTokenInput):
    """captum's TextTokenInput built from token ids rather than text, with non-attributed POSITIONS (captum's
    skip_tokens drops token VALUES everywhere, e.g. an <|endoftext|> inside the prompt too)."""

    def __init__(self, ids: list[int], attributed: np.ndarray, tokenizer, baseline_id: int) -> None:
        self.inp_tensor = torch.tensor([ids])
        mask = torch.from_numpy(attributed)[None]
        self.itp_mask = None if bool(mask.all()) else mask
        self.itp_tensor = self.inp_tensor[mask][None]
        self.values = tokenizer.convert_ids_to_tokens(self.itp_tensor[0].tolist())
        self.tokenizer = tokenizer
        self.n_itp_features = len(self.values)
        self.baselines = baseline_id
        self.skip_tokens = None


def _ids(model, name: str, ids: Sequence[int]) -> list[int]:
    values = [int(i) for i in ids]
    vocabulary = model.get_input_embeddings().num_embeddings
    if not values:
        raise UserError(f"{name} is empty: expected at least one token id")
    outside = [i for i in values if not 0 <= i < vocabulary]
    if outside:
        raise UserError(f"{name} holds token ids outside the model's vocabulary [0, {vocabulary}): {outside[:5]}")
    return values


def attributed_positions(tokenizer, prompt: list[int]) -> np.ndarray:
    """True for every prompt position that is attributed and may be deleted: all but the tokenizer's special tokens (a
    leading BOS, a chat template's turn markers such as <|im_start|>)."""
    return ~np.isin(prompt, [token for token in (*tokenizer.all_special_ids, tokenizer.bos_token_id) if token is not None])


def default_baseline(tokenizer) -> int:
    for token_id in (tokenizer.unk_token_id, tokenizer.pad_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return int(token_id)
    raise UserError(f"{type(tokenizer).__name__} has no unk, pad or eos token to use as the attribution baseline: pass baseline_id")


def continuation_log_probs(model, prompt: list[int], continuation: list[int]) -> np.ndarray:
    """log p(continuation token | prompt, continuation before it), one per continuation token (one forward)."""
    log_probs, _ = token_scores(model, np.array([prompt + continuation]), batch_size=1)
    return log_probs[0, len(prompt) - 1:]


def attribute(model, tokenizer, prompt_ids: Sequence[int], continuation_ids: Sequence[int], method: str = "feature_ablation",
              steps: int = 16, baseline_id: int | None = None) -> Attribution:
    """Scores of each prompt token for the continuation's log-probability by `method` (see the module docstring);
    `steps` is IG's number of interpolation steps (unused by feature ablation)."""
    if method not in METHODS:
        raise UserError(f"method {method!r} is not one of {', '.join(METHODS)}")
    if method == "layer_integrated_gradients" and steps < 1:
        raise UserError(f"steps={steps}: integrated gradients needs at least 1 step")
    prompt, continuation = _ids(model, "prompt_ids", prompt_ids), _ids(model, "continuation_ids", continuation_ids)
    attributed = attributed_positions(tokenizer, prompt)
    if not attributed.any():
        raise UserError("the prompt is only special tokens (BOS, template markers): there is no prompt token to attribute")
    baseline = default_baseline(tokenizer) if baseline_id is None else int(_ids(model, "baseline_id", [baseline_id])[0])
    model.eval()
    target = torch.tensor(continuation, device=model.device)
    inp = _TokenIdInput(prompt, attributed, tokenizer, baseline)
    if method == "feature_ablation":
        with torch.no_grad():
            result = LLMAttribution(FeatureAblation(model), tokenizer).attribute(inp, target=target, forward_in_tokens=False)
    else:
        ig = LayerIntegratedGradients(model, model.get_input_embeddings())
        result = LLMGradientAttribution(ig, tokenizer).attribute(inp, target=target, n_steps=steps)
    per_token = np.zeros((len(continuation), len(prompt)), dtype=np.float32)
    per_token[:, attributed] = result.token_attr.detach().float().cpu().numpy()
    scores, delta = per_token.sum(axis=0), None
    if method == "layer_integrated_gradients":  # captum's LLM wrapper cannot return IG's delta: compute completeness here
        blank = [baseline if keep else token for token, keep in zip(prompt, attributed)]
        gap = continuation_log_probs(model, prompt, continuation).sum() - continuation_log_probs(model, blank, continuation).sum()
        delta = float(scores.sum() - gap)
    return Attribution(scores, per_token, attributed, baseline, delta)


def faithfulness(model, prompt_ids: Sequence[int], continuation_ids: Sequence[int], scores: np.ndarray, k: int, random_draws: int,
                 seed: int, deletable: np.ndarray | None = None) -> dict:
    """Remove the k prompt tokens with the highest scores vs k random ones (mean over `random_draws` draws from
    np.random.default_rng(seed)); the drops of log p(continuation) in nats, for k and (curves) for 1..k.
    `deletable` (default: every position) is Attribution.attributed, which keeps a leading BOS."""
    prompt, continuation = _ids(model, "prompt_ids", prompt_ids), _ids(model, "continuation_ids", continuation_ids)
    scores = np.asarray(scores, dtype=np.float64)
    deletable = np.ones(len(prompt), dtype=bool) if deletable is None else np.asarray(deletable, dtype=bool)
    if scores.shape != (len(prompt),) or deletable.shape != (len(prompt),):
        raise UserError(f"scores {scores.shape} and deletable {deletable.shape} must have one value per prompt token ({len(prompt)})")
    limit = min(int(deletable.sum()), len(prompt) - 1)  # one token must stay to condition the first continuation token on
    if not 1 <= k <= limit:
        raise UserError(f"faithfulness k={k} must be between 1 and {limit} (the prompt's deletable tokens, at least one token kept)")
    if random_draws < 1:
        raise UserError(f"random_draws={random_draws}: expected at least 1")

    @functools.cache  # deletion_drops rescores the full prompt for every draw, and small prompts repeat deletions
    def scored(ids: tuple[int, ...]) -> float:
        return float(continuation_log_probs(model, list(ids), continuation).sum())

    def log_prob(ids: torch.Tensor) -> float:
        return scored(tuple(ids[0].tolist()))

    top, random = attribution.faithfulness(log_prob, torch.tensor([prompt]), scores, deletable, k, None, np.random.default_rng(seed), random_draws)
    positions = np.flatnonzero(deletable)
    return {"k": k, "top_drop": float(top[-1]), "random_drop": float(random[-1]), "top_beats_random": bool(top[-1] > random[-1]),
            "top_curve": top.tolist(), "random_curve": random.tolist(), "random_draws": random_draws,
            "deleted": sorted(positions[np.argsort(-scores[positions], kind="stable")][:k].tolist()),
            "log_prob": log_prob(torch.tensor([prompt]))}
