"""Scores of numeric predictions: the definitions against scikit-learn and scipy, intervals that hold the observed score,
and paired comparisons whose verdict follows which way each metric is better."""
import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

from finetune.scoring import numbers


@pytest.fixture
def rows():
    rng = np.random.default_rng(0)
    actual = rng.normal(3.0, 2.0, 400)
    return actual, actual + rng.normal(0, 0.5, 400), actual + rng.normal(0, 2.0, 400)


def test_scores_are_scikit_learns_and_scipys(rows):
    actual, good, _ = rows
    tied = np.round(good)  # ties get their average rank, as scipy's
    for predicted in (good, tied):
        scores = numbers.scores(actual, predicted)
        assert scores["rmse"] == pytest.approx(np.sqrt(mean_squared_error(actual, predicted)))
        assert scores["mae"] == pytest.approx(mean_absolute_error(actual, predicted))
        assert scores["r2"] == pytest.approx(r2_score(actual, predicted))
        assert scores["spearman"] == pytest.approx(spearmanr(actual, predicted).statistic)
    constant = numbers.scores(actual, np.full_like(actual, actual.mean()))
    assert constant["r2"] == pytest.approx(0.0) and constant["spearman"] == 0.0  # the mean predicted everywhere: the baseline


def test_intervals_hold_the_observed_score_and_narrow_with_more_rows(rows):
    actual, good, _ = rows
    wide = numbers.intervals(actual[:50], {"m": good[:50]})["m"]
    narrow = numbers.intervals(actual, {"m": good})["m"]
    for metric, value in numbers.scores(actual, good).items():
        assert narrow[metric]["low"] <= value <= narrow[metric]["high"], metric
        assert narrow[metric]["high"] - narrow[metric]["low"] < wide[metric]["high"] - wide[metric]["low"], metric


def test_a_paired_comparison_calls_lower_errors_and_higher_correlations_better(rows):
    actual, good, poor = rows
    better = numbers.compare(actual, good, poor)
    assert {metric: c["verdict"] for metric, c in better.items()} == dict.fromkeys(numbers.METRICS, "better")
    assert better["rmse"]["difference"] < 0 < better["spearman"]["difference"]
    worse = numbers.compare(actual, poor, good)
    assert {c["verdict"] for c in worse.values()} == {"worse"}
    same = numbers.compare(actual, good, good)
    assert {c["verdict"] for c in same.values()} == {"no significant difference"} and same["mae"]["p"] == 1.0
