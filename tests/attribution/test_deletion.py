"""The deletion test's verdict over examples (finetune/attribution/deletion.py), shared by every explainer."""
import numpy as np

from finetune.attribution.deletion import beats_random


def test_a_method_is_faithful_only_when_its_margin_over_random_is_above_zero_with_95_percent_confidence():
    rng = np.random.default_rng(0)
    clear = beats_random(0.1 + 0.02 * rng.standard_normal(12))
    assert clear["faithful"] is True and 0 < clear["ci95"]["low"] < clear["margin"] < clear["ci95"]["high"]
    noise = beats_random(0.01 + 0.2 * rng.standard_normal(12))  # positive on average, inside the noise
    assert noise["faithful"] is False and noise["ci95"]["low"] < 0 < noise["ci95"]["high"]
    assert beats_random(np.array([0.3]))["faithful"] is None  # one example cannot tell
