"""Perplexity, its interval and comparison, and the LM ensemble's mixture of next-token distributions."""
import math

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from finetune.families.generative import scoring
from finetune.families.generative.ensemble import mixture_weights


def test_perplexity_is_exp_of_the_mean_token_loss_computed_independently(tiny_causal_lm):
    model = AutoModelForCausalLM.from_pretrained(tiny_causal_lm)
    blocks = np.random.default_rng(0).integers(0, model.config.vocab_size, size=(5, 12))
    log_probs, correct = scoring.token_scores(model, blocks, batch_size=2)
    assert log_probs.shape == correct.shape == (5, 11)  # the first token of a block is not predicted
    with torch.no_grad():  # the model's own shifted cross-entropy, averaged over every predicted token
        ids = torch.as_tensor(blocks)
        loss = model(input_ids=ids, labels=ids).loss.item()
        logits = model(input_ids=ids).logits[:, :-1]
    summary = scoring.summarize(log_probs, correct)
    assert summary["loss"] == pytest.approx(loss, rel=1e-5)
    assert summary["perplexity"] == pytest.approx(math.exp(loss), rel=1e-5)
    assert summary["token_accuracy"] == pytest.approx((logits.argmax(-1) == ids[:, 1:]).float().mean().item())
    assert summary["tokens"] == 55


def test_the_interval_holds_the_perplexity_and_the_comparison_sees_a_real_difference():
    rng = np.random.default_rng(0)
    better = np.log(rng.uniform(0.2, 0.4, size=(60, 16)))
    worse = better - 0.3  # every token 0.3 nats less likely: perplexity x e^0.3
    ci = scoring.interval(better)["perplexity"]
    assert ci["low"] < scoring.summarize(better)["perplexity"] < ci["high"]
    verdict = scoring.compare(better, worse)["perplexity"]
    assert verdict["verdict"] == "better" and verdict["relative"] == pytest.approx(math.exp(-0.3) - 1, rel=1e-4)
    assert scoring.compare(better, better)["perplexity"] == {"difference": 0, "relative": 0, "low": 0, "high": 0, "p": 1.0,
                                                              "verdict": "no significant difference"}


def test_mixture_weights_maximise_val_likelihood_and_identical_members_equal_one():
    rng = np.random.default_rng(1)
    good, poor = rng.uniform(0.3, 0.9, 400), rng.uniform(0.01, 0.2, 400)
    weights = mixture_weights(np.stack([good, poor], axis=1))
    assert weights[0] > 0.95 and weights.sum() == pytest.approx(1)
    mixed = np.stack([good, poor], axis=1) @ weights
    assert np.log(mixed).mean() >= np.log(good).mean() - 1e-9  # never below the best member on the data it was fitted on
    same = mixture_weights(np.stack([good, good], axis=1))
    np.testing.assert_allclose(np.stack([good, good], axis=1) @ same, good)  # two identical members = one member
