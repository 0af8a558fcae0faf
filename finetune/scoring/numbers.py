"""Scores of numeric predictions (data.label_type number), the same definitions on val (train) and test (evaluate,
members, ensemble): RMSE, MAE, R² (1 - SSE / the total sum of squares around the scored rows' own mean: 0 = as good as
predicting that mean, negative = worse) and Spearman's rank correlation (ties get their average rank).

Intervals and paired comparisons as finetune/scoring/uncertainty.py does them for classes: the rows resampled with
replacement (DRAWS seeded resamples, the same ones for every model scored together), the percentile 95 % interval, and
for two models on the same rows the difference, its interval, a two-sided p and a verdict, where "better" means a LOWER
rmse / mae and a HIGHER r2 / spearman.
"""
from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from finetune.scoring.uncertainty import DRAWS, SEED, _percentiles, paired

METRICS = ("rmse", "mae", "r2", "spearman")
LOWER_IS_BETTER = ("rmse", "mae")


def _pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise Pearson correlation of two draws x rows arrays (0 where either row is constant)."""
    a, b = a - a.mean(axis=1, keepdims=True), b - b.mean(axis=1, keepdims=True)
    denominator = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    return np.divide((a * b).sum(axis=1), denominator, out=np.zeros(len(a)), where=denominator > 0)


def _scores(actual: np.ndarray, predicted: np.ndarray) -> dict[str, np.ndarray]:
    """Each metric of every row of draws x rows arrays (one resample per row)."""
    error = predicted - actual
    total = ((actual - actual.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
    sse = (error**2).sum(axis=1)
    return {"rmse": np.sqrt((error**2).mean(axis=1)), "mae": np.abs(error).mean(axis=1),
            "r2": np.divide(total - sse, total, out=np.zeros(len(total)), where=total > 0),
            "spearman": _pearson(rankdata(actual, axis=1), rankdata(predicted, axis=1))}


def scores(actual, predicted) -> dict[str, float]:
    """{rmse, mae, r2, spearman} of one model on these rows."""
    actual, predicted = (np.asarray(v, dtype=np.float64)[None] for v in (actual, predicted))
    return {name: float(values[0]) for name, values in _scores(actual, predicted).items()}


def _bootstrap(actual: np.ndarray, predictions: list[np.ndarray], seed: int, draws: int) -> list[dict[str, np.ndarray]]:
    """Each prediction's scores on the SAME resamples, drawn in chunks of ~2M row indices (memory stays flat)."""
    count = len(actual)
    rng, chunk = np.random.default_rng(seed), max(1, 2_000_000 // count)
    parts: list[list[dict]] = [[] for _ in predictions]
    for start in range(0, draws, chunk):
        rows = rng.integers(0, count, size=(min(chunk, draws - start), count))
        for part, predicted in zip(parts, predictions):
            part.append(_scores(actual[rows], predicted[rows]))
    return [{name: np.concatenate([p[name] for p in part]) for name in METRICS} for part in parts]


def intervals(actual, predictions: dict, seed: int = SEED, draws: int = DRAWS) -> dict:
    """{key: {metric: {low, high}}} of several models on the same resamples."""
    actual = np.asarray(actual, dtype=np.float64)
    scored = _bootstrap(actual, [np.asarray(p, dtype=np.float64) for p in predictions.values()], seed, draws)
    return {key: {metric: dict(zip(("low", "high"), _percentiles(values))) for metric, values in resampled.items()}
            for key, resampled in zip(predictions, scored)}


def compare(actual, predicted, reference, seed: int = SEED, draws: int = DRAWS) -> dict[str, dict]:
    """{metric: difference (model - reference), its interval, p, verdict} on the same resamples."""
    actual, predicted, reference = (np.asarray(v, dtype=np.float64) for v in (actual, predicted, reference))
    ours, theirs = _bootstrap(actual, [predicted, reference], seed, draws)
    return paired(scores(actual, predicted), scores(actual, reference), ours, theirs, LOWER_IS_BETTER)
