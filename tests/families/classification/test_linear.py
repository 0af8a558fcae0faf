"""The classical members' linear model: `C: auto` chooses the strength by cross-validation on the rows it is given."""
import numpy as np
import pytest

from finetune.families.classification import linear


def _rows(signal: float, number: bool, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(240, 40))
    score = signal * x[:, :5].sum(axis=1) + rng.normal(size=240)
    return x, (score if number else (score > 0).astype(int))


@pytest.mark.parametrize("number", [True, False], ids=["ridge", "logistic"])
def test_auto_regularises_noise_hard_and_a_clean_signal_lightly(number):
    noise = linear.fit(*_rows(0.0, number), C="auto", max_iter=2000)
    clean = linear.fit(*_rows(3.0, number), C="auto", max_iter=2000)
    assert noise.chosen_C <= 0.03 < 1.0 <= clean.chosen_C, (noise.chosen_C, clean.chosen_C)
    assert linear.facts(clean) == {"C chosen": clean.chosen_C} and linear.facts(linear.fit(*_rows(3.0, number), C=1.0, max_iter=2000)) == {}


def test_the_chosen_ridge_is_refitted_on_every_row_and_saves_like_a_fixed_one():
    x, y = _rows(1.0, number=True)
    chosen = linear.fit(x, y, C="auto", max_iter=2000)
    fixed = linear.fit(x, y, C=chosen.chosen_C, max_iter=2000)
    np.testing.assert_allclose(linear.outputs(chosen, x), linear.outputs(fixed, x), rtol=1e-6, atol=1e-9)
    reloaded = linear.from_arrays(linear.arrays(chosen))
    np.testing.assert_allclose(linear.outputs(reloaded, x), linear.outputs(chosen, x), rtol=1e-6, atol=1e-9)
