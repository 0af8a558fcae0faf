"""Numeric labels: parsed with the reason a label is no number, splits stratified on their quantiles, the model's scale
from train, and the warning that a class column looks like a score."""
import numpy as np
import pandas as pd
import pytest

from finetune.data import numbers
from finetune.errors import UserError


def test_labels_are_parsed_and_the_ones_that_are_no_number_say_why():
    values, problems = numbers.parse(pd.Series(["3.5", " -2 ", "1e3", "n/a", "nan", "-inf", "7 stars"]))
    assert values[:3].tolist() == [3.5, -2.0, 1000.0] and values[3:].isna().all()
    assert problems.tolist() == ["", "", "", "label 'n/a' is not a number", "label is NaN", "label is infinite", "label '7 stars' is not a number"]


def test_strata_are_quantile_bins_with_ties_spread_and_fewer_bins_on_small_data():
    values = pd.Series(np.r_[np.ones(50), np.linspace(0, 0.9, 50)])  # half the labels tied at 1 (like tweet confidence)
    bins = numbers.strata(values)
    assert bins.nunique() == numbers.STRATA and bins.value_counts().min() == 10
    assert numbers.strata(pd.Series(np.arange(7.0))).nunique() == 2  # at least 3 rows a bin


def test_the_target_is_the_train_mean_and_std_and_outputs_come_back_in_its_units():
    target = numbers.target(pd.Series([1.0, 2.0, 3.0, 6.0]), "score")
    assert target == {"mean": 3.0, "std": pytest.approx(np.std([1, 2, 3, 6])), "column": "score"}
    layout = {"target": target}
    values = np.array([0.5, 3.0, 10.0])
    assert np.allclose(numbers.in_units(numbers.standardised(values, layout), layout)[:, 0], values)
    with pytest.raises(UserError, match="labels .column 'score'. are all 4.0"):
        numbers.target(pd.Series([4.0, 4.0, 4.0]), "score")


def test_a_class_column_of_many_distinct_numbers_is_flagged_as_a_score():
    scores = pd.Series([f"{v:.2f}" for v in np.linspace(0, 1, 300)])
    assert "data.label_type number" in numbers.many_values_warning(scores)
    assert numbers.many_values_warning(pd.Series(["1", "2", "3"] * 100)) is None  # a few numeric classes (star ratings)
    assert numbers.many_values_warning(pd.Series([f"word{i}" for i in range(300)])) is None
