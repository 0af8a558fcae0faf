"""The text explainer (finetune/tasks/text-classification/explain.py) through the explain stage on the tiny model: one score
per token, IG completeness, faithfulness from real deletions, examples chosen by the classification family."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from finetune import paths
from finetune.attribution import deletion as attribution
from finetune.errors import UserError
from finetune.families.classification.explain import select_examples
from finetune.tasks import get_task
from stages import compress, evaluate, explain
from tests.support.params import load, tiny_params


@pytest.fixture
def explained(trained_workdir, tiny_model):
    params = load(tiny_params(tiny_model, explain={"examples": 8, "ig_steps": 64}))
    evaluate.run(params)
    return params, explain.run(params), json.loads((paths.EXPLAIN / "attributions.json").read_text())


def test_every_method_gives_one_score_per_token_and_ig_is_complete(explained):
    params, result, saved = explained
    assert result["examples"] == 8 and result["methods"] == ["integrated_gradients", "gradient_x_input", "attention"]
    task = get_task(params.task)
    model = task.models.load_trained(str(paths.MODEL), False).eval()
    tokenizer = task.models.load_processor(str(paths.MODEL), False)
    for example in saved["examples"]:
        n = len(example["tokens"])
        assert len(example["integrated_gradients"]) == len(example["gradient_x_input"]) == len(example["attention"]) == n
        assert example["tokens"][0] == "[CLS]" and example["special"][0] and not any(example["special"][1:-1])
        assert sum(example["attention"]) == pytest.approx(1.0, abs=1e-4)  # one softmax row, averaged over heads
        # completeness: sum of attributions = p(x) - p(baseline), up to exactly the reported delta
        ids = torch.tensor([tokenizer.convert_tokens_to_ids(example["tokens"])])
        baseline = torch.where(torch.tensor([example["special"]]), ids, tokenizer.pad_token_id)
        target = json.loads((paths.MODEL / "label_map.json").read_text())["labels"].index(example["predicted"])
        with torch.no_grad():
            p_x, p_base = (torch.softmax(model(input_ids=x).logits, -1)[0, target].item() for x in (ids, baseline))
        assert p_x == pytest.approx(example["probability"], abs=1e-5)
        assert abs(sum(example["integrated_gradients"]) - (p_x - p_base)) == pytest.approx(abs(example["convergence_delta"]), abs=1e-4)
        assert abs(example["convergence_delta"]) < 0.05
    f = result["faithfulness"]
    assert f["k"] == [1, 2, 3, 4, 5] and len(f["top_ig_drop"]) == len(f["random_drop"]) == 5
    verdict = f["beats_random"]["integrated_gradients"]  # each example's AOPC margin, averaged: the AOPCs' difference
    assert verdict["margin"] == pytest.approx(f["aopc_top_ig"] - f["aopc_random"], abs=2e-5)
    assert f["ig_beats_random"] is verdict["faithful"] is True and verdict["ci95"]["low"] > 0  # one keyword carries each tiny label: IG finds it


def test_compressed_models_are_compared_with_their_teacher(explained, tiny_model):
    _, result, _ = explained
    assert result["compressed_vs_teacher"] == {}  # compress has not run
    params = load(tiny_params(tiny_model, explain={"examples": 4}, compress={
        "teacher": "primary", "methods": ["int8", "prune", "distill"],
        "prune": {"structure": "ffn_neurons", "sparsity": 0.0, "recover_epochs": 0}, "distill": {"epochs": 1}}))
    compress.run(params)
    drift = explain.run(params)["compressed_vs_teacher"]
    assert drift["teacher"] == "primary" and drift["int8"].startswith("skipped")
    assert drift["prune"] == {"mean_spearman": 1.0, "examples": 4}  # sparsity 0: the teacher itself, same attributions
    assert -1 <= drift["distill"]["mean_spearman"] <= 1 and drift["distill"]["examples"] == 4


def test_the_examples_include_the_worst_errors_and_the_extremes_of_confidence():
    predictions = pd.DataFrame({"actual": ["a", "a", "b", "b", "a", "b", "a", "b"], "predicted": ["a", "b", "b", "a", "a", "b", "a", "a"],
                                "confidence": [0.9, 0.8, 0.99, 0.6, 0.4, 0.7, 0.55, 0.65]})
    chosen = select_examples(predictions, 5, seed=0)
    assert chosen[:3] == [(1, "misclassified, most confident"), (2, "most confident"), (4, "least confident")]
    assert len(chosen) == 5 and len({row for row, _ in chosen}) == 5
    assert chosen == select_examples(predictions, 5, seed=0)  # seeded


def test_faithfulness_finds_the_token_a_hand_built_model_depends_on():
    important = 7  # the hand-built "model": p(class) = 0.9 when token 7 is present, else 0.1

    def probability(ids):
        return 0.9 if (ids == important).any() else 0.1

    ids = torch.tensor([[101, 5, 7, 6, 8, 9, 102]])
    candidates = np.array([False, True, True, True, True, True, False])
    right = np.array([0, 0.1, 0.9, 0.2, 0.0, -0.1, 0])  # ranks token 7 first
    wrong = np.array([0, 0.1, -0.9, 0.2, 0.0, -0.1, 0])  # ranks it last
    rng = np.random.default_rng(0)
    top, random = attribution.faithfulness(probability, ids, right, candidates, 3, 103, rng, random_draws=200)
    assert top.tolist() == pytest.approx([0.8, 0.8, 0.8])
    assert random.tolist() == pytest.approx([0.8 * 1 / 5, 0.8 * 2 / 5, 0.8 * 3 / 5], abs=0.06)  # k of 5 tokens hit it with chance k/5
    top_wrong, _ = attribution.faithfulness(probability, ids, wrong, candidates, 3, 103, rng, random_draws=1)
    assert top_wrong.tolist() == pytest.approx([0.0, 0.0, 0.0])  # a misleading attribution is not faithful


@pytest.mark.parametrize("section, message", [
    ({"methods": ["gradient_x_input"]}, "methods must include integrated_gradients"),
    ({"methods": ["integrated_gradients", "lime"]}, r"explain\.methods\.1: Input should be 'integrated_gradients', 'gradient_x_input' or 'attention'"),  # the text task's methods
    ({"examples": 0}, r"explain\.examples: Input should be greater than or equal to 1"),
])
def test_bad_explain_params_are_refused(workdir, tiny_model, section, message):
    with pytest.raises(UserError, match=message):
        load(tiny_params(tiny_model, explain=section))
