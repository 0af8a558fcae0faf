"""The causal-LM params schema: what a causal LM refuses before any work."""
from __future__ import annotations

import pytest

from finetune.config.params import parse_params
from finetune.errors import UserError


@pytest.mark.parametrize("method", ["hard_vote", "stacking"])
def test_ensemble_methods_without_meaning_for_token_distributions_are_refused_by_the_schema(method):
    def ensemble(task: str, method: str, member: dict):
        return {"task": task, "ensemble": {"method": method, "members": {"other": member}}}

    lm_member = {"kind": "finetune", "train": {"seed": 1}}
    with pytest.raises(UserError, match=r"ensemble.method: Input should be 'auto', 'best_member', 'soft_vote' or 'weighted'"):
        parse_params(ensemble("causal-lm", method, lm_member))
    assert parse_params(ensemble("causal-lm", "weighted", lm_member)).ensemble.method == "weighted"
    classifier = parse_params(ensemble("text-classification", method, {"kind": "tfidf"}))
    assert classifier.ensemble.method == method  # the classifiers keep every method
