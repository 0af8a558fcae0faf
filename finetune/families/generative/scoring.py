"""Scoring a causal LM on packed token blocks: each token's log-probability given the tokens before it.

Perplexity is exp(mean negative log-probability) over every predicted token (the first token of a block has
no context and is not predicted); next-token accuracy is how often the most likely token is the true one. Blocks whose
prepared table has `labels` (a chat: -100 outside the assistant's turns) are scored on their labelled tokens only:
the others' log-probabilities are NaN, left out of every mean, interval and mixture.
Both come from one forward pass per batch; the per-token log-probabilities are kept (not just their mean),
so ensembles mix the members' distributions at the true token and the bootstrap resamples blocks. Each scored model's
val and test log-probabilities are saved (LOGPROBS): a member of the ensemble.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from finetune import paths
from finetune.scoring import uncertainty

IGNORE = -100  # a label the loss skips (transformers' ignore_index)


def token_scores(model, blocks: np.ndarray, batch_size: int, scored: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(log p(x_t | x_<t), whether x_t was the most likely token), each blocks x (block_size - 1), in block order;
    NaN log-probabilities where `scored` (the same shape) is False."""
    model.eval()
    device = next(model.parameters(), torch.empty(0)).device
    log_probs, correct = [], []
    with torch.inference_mode():
        for start in range(0, len(blocks), batch_size):
            ids = torch.as_tensor(np.asarray(blocks[start:start + batch_size]), dtype=torch.long, device=device)
            logits = model(input_ids=ids).logits[:, :-1].float()
            targets = ids[:, 1:]
            chosen = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            log_probs.append(chosen.cpu().numpy())
            correct.append((logits.argmax(-1) == targets).cpu().numpy())
    width = blocks.shape[1] - 1 if len(blocks) else 0
    log_probs = np.concatenate(log_probs) if log_probs else np.zeros((0, width), np.float32)
    return (log_probs if scored is None else np.where(scored, log_probs, np.float32(np.nan)),
            np.concatenate(correct) if correct else np.zeros((0, width), bool))


def summarize(log_probs: np.ndarray, correct: np.ndarray | None = None) -> dict:
    """loss (mean negative log-probability per token, nats), perplexity, next-token accuracy, tokens scored."""
    counted = ~np.isnan(log_probs)
    loss = float(-log_probs[counted].mean())
    result = {"loss": loss, "perplexity": math.exp(loss), "tokens": int(counted.sum())}
    if correct is not None:
        result["token_accuracy"] = float(correct[counted].mean())
    return result


def block_losses(log_probs: np.ndarray) -> np.ndarray:
    """Each block's mean negative log-probability over its scored tokens."""
    return -np.nanmean(log_probs, axis=1)


def _resampled_perplexities(models: list[np.ndarray], seed: int, draws: int) -> list[np.ndarray]:
    """Each model's perplexity on the SAME resamples of whole BLOCKS (a block's tokens are not independent): the mean
    loss of the resampled blocks' tokens (blocks with equal token counts: the mean of their means, as computed before
    masks existed, so unmasked numbers stay the same to the last digit)."""
    counts = (~np.isnan(models[0])).sum(axis=1)
    rows = np.random.default_rng(seed).integers(0, len(counts), size=(draws, len(counts)))
    if (counts == counts[0]).all():
        return [np.exp(block_losses(m)[rows].mean(axis=1)) for m in models]
    return [np.exp(-np.nansum(m, axis=1)[rows].sum(axis=1) / counts[rows].sum(axis=1)) for m in models]


def interval(log_probs: np.ndarray, seed: int = uncertainty.SEED, draws: int = uncertainty.DRAWS) -> dict:
    """The percentile bootstrap 95 % interval of the perplexity, blocks resampled."""
    (resampled,) = _resampled_perplexities([log_probs], seed, draws)
    low, high = np.percentile(resampled, [2.5, 97.5])
    return {"perplexity": {"low": round(float(low), 4), "high": round(float(high), 4)}}


def compare(log_probs: np.ndarray, reference: np.ndarray, seed: int = uncertainty.SEED, draws: int = uncertainty.DRAWS) -> dict:
    """Paired bootstrap over the same blocks (finetune/scoring/uncertainty.py's method): the perplexity difference (model -
    reference), its relative change, interval, p and verdict ("better" = LOWER perplexity at p < 0.05)."""
    ours, theirs = _resampled_perplexities([log_probs, reference], seed, draws)
    observed, baseline = summarize(log_probs)["perplexity"], summarize(reference)["perplexity"]
    difference, spread = observed - baseline, ours - theirs
    p = 1.0 if difference == 0 else float(np.mean(np.abs(spread - difference) >= abs(difference)))
    verdict = ("better" if difference < 0 else "worse") if p < uncertainty.ALPHA else "no significant difference"
    low, high = np.percentile(spread, [2.5, 97.5])
    return {"perplexity": {"difference": round(difference, 4), "relative": round(difference / baseline, 4), "low": round(float(low), 4),
                           "high": round(float(high), 4), "p": round(p, 4), "verdict": verdict}}


def describe(comparison: dict) -> str:
    c = comparison["perplexity"]
    return f"{c['verdict']} ({c['difference']:+.2f}, {100 * c['relative']:+.1f} %, p = {c['p']:.2g})"


LOGPROBS = "token_logprobs.safetensors"


def load_blocks(split: str) -> np.ndarray:
    return np.stack(pd.read_parquet(paths.PREPARED / f"{split}.parquet", columns=["input_ids"])["input_ids"].to_numpy())


def load_scored(split: str) -> np.ndarray | None:
    """Which next-token positions of the split's blocks count (labels other than IGNORE), or None when all do."""
    import pyarrow.parquet as pq

    path = paths.PREPARED / f"{split}.parquet"
    if "labels" not in pq.read_schema(path).names:
        return None
    return np.stack(pd.read_parquet(path, columns=["labels"])["labels"].to_numpy())[:, 1:] != IGNORE


def save_logprobs(path: Path, by_split: dict[str, np.ndarray]) -> None:
    from safetensors.numpy import save_file

    save_file({split: np.ascontiguousarray(values, dtype=np.float32) for split, values in by_split.items()}, str(path))


def load_logprobs(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(path))


def score(model, blocks: dict[str, np.ndarray], batch_size: int) -> tuple[dict[str, np.ndarray], dict]:
    """({split: per-token log-probs}, {split: summary}), val and test: each split's prepared blocks' scored tokens."""
    log_probs, summary = {}, {}
    for split, split_blocks in blocks.items():
        values, correct = token_scores(model, split_blocks, batch_size, load_scored(split))
        log_probs[split], summary[split] = values, summarize(values, correct)
    return log_probs, summary
