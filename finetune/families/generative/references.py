"""Generated replies scored against the replies they should have been (a chat's held-out conversations): chrF
(sacrebleu's corpus chrF, character n-grams up to 6 and word bigrams: chrF++), ROUGE-L F1 (rouge-score's, stemmed,
averaged over replies) and exact match (whitespace- and case-normalised), each with a percentile bootstrap interval
over the prompts, and the paired comparison of two models on the SAME prompts (the fine-tuned vs the pretrained:
the difference, its interval and p, as finetune/scoring/uncertainty.py does for classifiers).

Corpus chrF is recomputed on every resample (it is not a mean of sentence scores); prompts are few (evaluate.auto_prompts),
so the intervals are wide and say so.
"""
from __future__ import annotations

import numpy as np

from finetune.scoring import uncertainty

METRICS = ("chrf", "rouge_l", "exact_match")


def _normalized(text: str) -> str:
    return " ".join(str(text).split()).casefold()


def per_reply(generated: list[str], references: list[str]) -> dict[str, np.ndarray]:
    """Each reply's statistics: chrF's n-gram match counts (summed over replies for corpus chrF; sacrebleu's own
    segment statistics, which its significance tests resample too), ROUGE-L F1, exact match."""
    from rouge_score import rouge_scorer

    rouge = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return {"chrf": np.array(chrf_plus_plus()._extract_corpus_statistics(list(generated), [list(references)]), dtype=np.int64),
            "rouge_l": np.array([rouge.score(r, g)["rougeL"].fmeasure for g, r in zip(generated, references)]),
            "exact_match": np.array([_normalized(g) == _normalized(r) for g, r in zip(generated, references)], dtype=float)}


def chrf_plus_plus():
    from sacrebleu.metrics import CHRF

    return CHRF(word_order=2)


def _scores(chrf, found: dict[str, np.ndarray], rows) -> dict[str, float]:
    return {"chrf": float(chrf._compute_score_from_stats(found["chrf"][rows].sum(axis=0).tolist()).score),
            "rouge_l": float(found["rouge_l"][rows].mean() * 100), "exact_match": float(found["exact_match"][rows].mean() * 100)}


def score(generated: list[str], references: list[str], seed: int = uncertainty.SEED, draws: int = uncertainty.DRAWS) -> dict:
    """{chrf, rouge_l, exact_match} (0-100) with ci95 over the prompts resampled."""
    chrf, found = chrf_plus_plus(), per_reply(generated, references)
    result = _scores(chrf, found, slice(None))
    resampled = [_scores(chrf, found, rows) for rows in np.random.default_rng(seed).integers(0, len(generated), size=(draws, len(generated)))]
    ci = {m: dict(zip(("low", "high"), (round(float(v), 2) for v in np.percentile([s[m] for s in resampled], [2.5, 97.5]))))
          for m in METRICS}
    return {**{m: round(v, 2) for m, v in result.items()}, "replies": len(generated), "ci95": ci}


def compare(generated: list[str], other: list[str], references: list[str], seed: int = uncertainty.SEED,
            draws: int = uncertainty.DRAWS) -> dict[str, dict]:
    """{metric: difference (generated - other), its interval, p, verdict ("better" = higher at p < 0.05)} on the same
    resampled prompts (paired)."""
    chrf = chrf_plus_plus()
    ours, theirs = per_reply(generated, references), per_reply(other, references)
    observed, baseline = _scores(chrf, ours, slice(None)), _scores(chrf, theirs, slice(None))
    rows = np.random.default_rng(seed).integers(0, len(references), size=(draws, len(references)))
    spreads = [(_scores(chrf, ours, r), _scores(chrf, theirs, r)) for r in rows]
    result = {}
    for metric in METRICS:
        difference = observed[metric] - baseline[metric]
        spread = np.array([a[metric] - b[metric] for a, b in spreads])
        p = 1.0 if difference == 0 else float(np.mean(np.abs(spread - difference) >= abs(difference)))
        low, high = np.percentile(spread, [2.5, 97.5])
        verdict = ("better" if difference > 0 else "worse") if p < uncertainty.ALPHA else "no significant difference"
        result[metric] = {"difference": round(difference, 2), "low": round(float(low), 2), "high": round(float(high), 2), "p": round(p, 4),
                          "verdict": verdict}
    return result
