"""finetune/scoring/uncertainty.py: bootstrap intervals cover the truth at about their nominal rate, the paired test finds a
planted difference and not an identical pair, and the observed scores are scikit-learn's."""
import numpy as np
import pytest

from finetune.scoring import metrics
from finetune.scoring.uncertainty import compare, describe, interval


def test_the_accuracy_interval_covers_the_true_accuracy_95_percent_of_the_time():
    rng, truth, rows, simulations = np.random.default_rng(1), 0.8, 200, 500
    covered = 0
    for seed in range(simulations):
        y_true = rng.integers(0, 3, rows)
        y_pred = np.where(rng.random(rows) < truth, y_true, (y_true + 1) % 3)
        ci = interval(y_true, y_pred, seed=seed, draws=400)["accuracy"]
        covered += ci["low"] <= truth <= ci["high"]
    assert 0.92 <= covered / simulations <= 0.98, covered / simulations


def test_the_macro_f1_interval_covers_the_population_value():
    rng = np.random.default_rng(2)
    population_true = rng.choice(3, 50_000, p=[0.6, 0.3, 0.1])  # imbalanced: the rare class makes macro F1 noisy
    confusion = np.array([[0.85, 0.1, 0.05], [0.2, 0.7, 0.1], [0.3, 0.2, 0.5]])
    population_pred = np.array([rng.choice(3, p=confusion[c]) for c in population_true])
    truth = metrics.headline(population_true, population_pred)["f1_macro"]
    covered, simulations = 0, 300
    for seed in range(simulations):
        rows = rng.choice(len(population_true), 300, replace=False)
        ci = interval(population_true[rows], population_pred[rows], seed=seed, draws=400)["f1_macro"]
        covered += ci["low"] <= truth <= ci["high"]
    assert 0.91 <= covered / simulations <= 0.985, covered / simulations


def test_observed_scores_are_scikit_learns_even_with_a_class_never_predicted():
    rng = np.random.default_rng(3)
    y_true, y_pred = rng.integers(0, 4, 120), rng.integers(0, 3, 120)  # class 3 is never predicted
    ours = compare(y_true, y_pred, np.zeros_like(y_true), draws=50)
    reference = metrics.headline(y_true, np.zeros_like(y_true))
    for name in ("accuracy", "f1_macro"):
        assert ours[name]["difference"] == pytest.approx(metrics.headline(y_true, y_pred)[name] - reference[name], abs=1e-4)


def test_the_paired_test_flags_a_planted_difference_and_not_an_identical_pair():
    rng = np.random.default_rng(4)
    y_true = rng.integers(0, 3, 400)
    weaker = np.where(rng.random(400) < 0.7, y_true, (y_true + 1) % 3)
    stronger = np.where(rng.random(400) < 0.5, y_true, weaker)  # fixes about half of weaker's errors: +15 pt
    up, down, same = compare(y_true, stronger, weaker), compare(y_true, weaker, stronger), compare(y_true, weaker, weaker.copy())
    assert up["accuracy"]["verdict"] == "better" and up["accuracy"]["p"] < 0.01 and up["accuracy"]["low"] > 0
    assert down["f1_macro"]["verdict"] == "worse" and down["f1_macro"]["high"] < 0
    assert same["accuracy"] == {"difference": 0.0, "low": 0.0, "high": 0.0, "p": 1.0, "verdict": "no significant difference"}
    assert describe(same) == "no significant difference (+0.000, p = 1)"
    assert describe(up).startswith("better (+0.1")


def test_a_small_difference_on_few_rows_is_not_called_significant():
    rng = np.random.default_rng(5)
    y_true = rng.integers(0, 3, 180)
    a = np.where(rng.random(180) < 0.65, y_true, (y_true + 1) % 3)
    b = a.copy()
    b[np.flatnonzero(b != y_true)[:3]] = y_true[np.flatnonzero(b != y_true)[:3]]  # 3 more rows right: +1.7 pt
    assert compare(y_true, b, a)["accuracy"]["verdict"] == "no significant difference"


def test_intervals_are_seeded_and_bracket_the_observed_score():
    rng = np.random.default_rng(6)
    y_true, y_pred = rng.integers(0, 5, 10_000), rng.integers(0, 5, 10_000)
    first, again = interval(y_true, y_pred), interval(y_true, y_pred)
    assert first == again
    observed = metrics.headline(y_true, y_pred)
    for name in ("accuracy", "f1_macro"):
        assert first[name]["low"] < observed[name] < first[name]["high"]
