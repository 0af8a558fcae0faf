"""Scoring a causal LM on packed token blocks: each token's log-probability given the tokens before it.

Perplexity is exp(mean negative log-probability) over every predicted token (the first token of a block has
no context and is not predicted); next-token accuracy is how often the most likely token is the true one.
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


def token_scores(model, blocks: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(log p(x_t | x_<t), whether x_t was the most likely token), each blocks x (block_size - 1), in block order."""
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
    return (np.concatenate(log_probs) if log_probs else np.zeros((0, width), np.float32),
            np.concatenate(correct) if correct else np.zeros((0, width), bool))


def summarize(log_probs: np.ndarray, correct: np.ndarray | None = None) -> dict:
    """loss (mean negative log-probability per token, nats), perplexity, next-token accuracy, tokens scored."""
    loss = float(-log_probs.mean())
    result = {"loss": loss, "perplexity": math.exp(loss), "tokens": int(log_probs.size)}
    if correct is not None:
        result["token_accuracy"] = float(correct.mean())
    return result


def _block_losses(log_probs: np.ndarray) -> np.ndarray:
    return -log_probs.mean(axis=1)


def _resampled_perplexities(models: list[np.ndarray], seed: int, draws: int) -> list[np.ndarray]:
    """Each model's perplexity on the SAME resamples of whole BLOCKS (a block's tokens are not independent)."""
    losses = [_block_losses(m) for m in models]
    rows = np.random.default_rng(seed).integers(0, len(losses[0]), size=(draws, len(losses[0])))
    return [np.exp(loss[rows].mean(axis=1)) for loss in losses]


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


def save_logprobs(path: Path, by_split: dict[str, np.ndarray]) -> None:
    from safetensors.numpy import save_file

    save_file({split: np.ascontiguousarray(values, dtype=np.float32) for split, values in by_split.items()}, str(path))


def load_logprobs(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(path))


def score(model, blocks: dict[str, np.ndarray], batch_size: int) -> tuple[dict[str, np.ndarray], dict]:
    """({split: per-token log-probs}, {split: summary}), val and test."""
    log_probs, summary = {}, {}
    for split, split_blocks in blocks.items():
        values, correct = token_scores(model, split_blocks, batch_size)
        log_probs[split], summary[split] = values, summarize(values, correct)
    return log_probs, summary
