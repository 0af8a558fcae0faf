"""How sure a test score is: bootstrap confidence intervals and paired comparisons, for every reported model.

With a few hundred test rows a macro F1 moves by several points from the luck of which rows landed in test
(±3.5 pt at 180 rows), so raw decimals invite readers to see differences that are noise. Here:
- `interval`: a percentile bootstrap 95 % interval of accuracy and macro F1 (the test rows resampled with
  replacement, DRAWS times, seeded);
- `compare`: a paired bootstrap of two models' predictions on the SAME rows (each resample scores both, so
  what the rows have in common cancels out): the difference, its 95 % interval, a two-sided p-value (the
  share of resamples whose difference lies at least as far from the observed one as the observed one from 0,
  i.e. the bootstrap distribution shifted to the null; Efron & Tibshirani 1993, §16.4) and a verdict:
  "better" / "worse" at p < 0.05, else "no significant difference".
Each resample's confusion matrix comes from one bincount over all resamples at once, so 1,000 draws over
10,000 rows and 10 classes take ~0.4 s on this 2-core machine, 588 rows ~10 ms.
Why not scikit-learn/scipy: scipy.stats.bootstrap recomputes the statistic per resample in Python (slow
for macro F1) and neither has the paired test; the whole method is these ~40 lines.
"""
from __future__ import annotations

import numpy as np

DRAWS = 1000
SEED = 0
LEVEL = 0.95
ALPHA = 0.05  # "better" / "worse" below this p-value
METRICS = ("accuracy", "f1_macro")


def _scores(y_true: np.ndarray, y_pred: np.ndarray, classes: int, rows: np.ndarray) -> dict[str, np.ndarray]:
    """Accuracy and macro F1 of each resample (a row of `rows`: the drawn test-row indices), from one confusion
    matrix per resample counted in a single bincount. Macro F1 averages over the classes present in the
    resample's labels or predictions, as scikit-learn's does."""
    codes = (y_true * classes + y_pred)[rows] + np.arange(len(rows))[:, None] * classes**2
    confusion = np.bincount(codes.ravel(), minlength=len(rows) * classes**2).reshape(len(rows), classes, classes)
    hits = np.diagonal(confusion, axis1=1, axis2=2).astype(np.float64)
    totals = confusion.sum(axis=2) + confusion.sum(axis=1)  # 2 tp + fp + fn
    present = totals > 0
    f1 = np.divide(2 * hits, totals, out=np.zeros_like(hits), where=present)
    return {"accuracy": hits.sum(axis=1) / rows.shape[1], "f1_macro": f1.sum(axis=1) / present.sum(axis=1)}


def _bootstrap(y_true: np.ndarray, predictions: list[np.ndarray], seed: int, draws: int) -> list[dict[str, np.ndarray]]:
    """Each prediction's scores on the SAME `draws` resamples of the rows (drawn in chunks of ~4M row indices,
    so memory stays flat however many test rows there are)."""
    count, classes = len(y_true), int(max(int(np.max(a)) for a in (y_true, *predictions))) + 1
    rng, chunk = np.random.default_rng(seed), max(1, 4_000_000 // count)
    parts: list[list[dict]] = [[] for _ in predictions]
    for start in range(0, draws, chunk):
        rows = rng.integers(0, count, size=(min(chunk, draws - start), count))
        for part, y_pred in zip(parts, predictions):
            part.append(_scores(y_true, y_pred, classes, rows))
    return [{name: np.concatenate([p[name] for p in part]) for name in METRICS} for part in parts]


def _observed(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    classes = int(max(y_true.max(), y_pred.max())) + 1
    return {name: float(v[0]) for name, v in _scores(y_true, y_pred, classes, np.arange(len(y_true))[None]).items()}


def _percentiles(values: np.ndarray) -> tuple[float, float]:
    tail = 100 * (1 - LEVEL) / 2
    return round(float(np.percentile(values, tail)), 4), round(float(np.percentile(values, 100 - tail)), 4)


def interval(y_true, y_pred, seed: int = SEED, draws: int = DRAWS) -> dict[str, dict[str, float]]:
    """{metric: {"low", "high"}}: the percentile bootstrap interval at LEVEL."""
    return intervals(y_true, {"model": y_pred}, seed, draws)["model"]


def intervals(y_true, predictions: dict, seed: int = SEED, draws: int = DRAWS) -> dict:
    """{key: `interval`} of several models (any keys) on the same resamples: one draw of the row indices for all."""
    scored = _bootstrap(np.asarray(y_true), [np.asarray(p) for p in predictions.values()], seed, draws)
    return {name: {metric: dict(zip(("low", "high"), _percentiles(values))) for metric, values in scores.items()}
            for name, scores in zip(predictions, scored)}


def compare(y_true, y_pred, y_reference, seed: int = SEED, draws: int = DRAWS) -> dict[str, dict]:
    """{metric: difference (model - reference), its interval, p, verdict} on the same resamples."""
    y_true, y_pred, y_reference = map(np.asarray, (y_true, y_pred, y_reference))
    ours, theirs = _bootstrap(y_true, [y_pred, y_reference], seed, draws)
    return paired(_observed(y_true, y_pred), _observed(y_true, y_reference), ours, theirs)


def paired(observed: dict, reference: dict, ours: dict, theirs: dict, lower_is_better=()) -> dict[str, dict]:
    """{metric: difference, interval, p, verdict} from two models' observed scores and their scores on the same
    resamples; "better" is a higher score except for the metrics in `lower_is_better` (errors: finetune/scoring/numbers.py)."""
    result = {}
    for name in observed:
        difference = observed[name] - reference[name]
        spread = ours[name] - theirs[name]
        p = 1.0 if difference == 0 else float(np.mean(np.abs(spread - difference) >= abs(difference)))
        better = difference < 0 if name in lower_is_better else difference > 0
        verdict = ("better" if better else "worse") if p < ALPHA else "no significant difference"
        low, high = _percentiles(spread)
        result[name] = {"difference": round(difference, 4), "low": low, "high": high, "p": round(p, 4), "verdict": verdict}
    return result


def describe(comparison: dict, metric: str = "f1_macro") -> str:
    """One line for a reader: "better (+0.052, p = 0.003)" or "no significant difference (p = 0.41)"."""
    c = comparison[metric]
    if c["verdict"] == "no significant difference":
        return f"no significant difference ({c['difference']:+.3f}, p = {c['p']:.2g})"
    return f"{c['verdict']} ({c['difference']:+.3f}, p = {c['p']:.2g})"
