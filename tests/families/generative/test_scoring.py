"""Perplexity, its interval and comparison, and the LM ensemble's mixture of next-token distributions."""
import math

import numpy as np
import pandas as pd
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


def test_masked_tokens_are_left_out_of_the_loss_the_model_trains_on_and_of_every_score(tiny_causal_lm):
    """A chat scores the assistant's tokens only: the positions `scored` leaves out are NaN, and the perplexity is the
    model's own loss with labels -100 there; blocks with different token counts are weighted by their tokens."""
    from finetune.families.generative.models import BlockDataset

    model = AutoModelForCausalLM.from_pretrained(tiny_causal_lm)
    blocks = np.random.default_rng(0).integers(0, model.config.vocab_size, size=(4, 12))
    labels = blocks.copy()
    labels[:, :5] = scoring.IGNORE
    labels[0, 5:9] = scoring.IGNORE  # the first block has 3 scored tokens, the others 7
    dataset = BlockDataset(pd.DataFrame({"input_ids": list(blocks), "labels": list(labels)}))
    np.testing.assert_array_equal(dataset[0]["labels"], labels[0])
    log_probs, correct = scoring.token_scores(model, blocks, batch_size=3, scored=labels[:, 1:] != scoring.IGNORE)
    assert np.isnan(log_probs).sum() == 4 * 11 - 3 - 3 * 7
    with torch.no_grad():
        loss = model(input_ids=torch.as_tensor(blocks), labels=torch.as_tensor(labels)).loss.item()
    summary = scoring.summarize(log_probs, correct)
    assert summary["tokens"] == 24 and summary["loss"] == pytest.approx(loss, rel=1e-5)
    np.testing.assert_allclose(scoring.block_losses(log_probs)[1:], -np.nanmean(log_probs[1:], axis=1))
    from finetune.scoring import uncertainty

    rows = np.random.default_rng(uncertainty.SEED).integers(0, 4, size=(uncertainty.DRAWS, 4))  # blocks resampled, tokens pooled
    pooled = np.exp(-np.nansum(log_probs, axis=1)[rows].sum(axis=1) / (~np.isnan(log_probs)).sum(axis=1)[rows].sum(axis=1))
    assert scoring.interval(log_probs)["perplexity"] == {"low": round(float(np.percentile(pooled, 2.5)), 4),
                                                         "high": round(float(np.percentile(pooled, 97.5)), 4)}
