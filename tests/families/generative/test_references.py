"""Replies scored against references: corpus chrF++ is sacrebleu's own, ROUGE-L and exact match by definition, intervals
over prompts, and the paired comparison of two models."""
import pytest
from sacrebleu.metrics import CHRF

from finetune.families.generative import references

GENERATED = ["the cat sat on the mat", "Hello  there", "I am fine", "it rains"]
WANTED = ["the cat is on the mat", "hello there", "I am very well thanks", "the sun shines"]


def test_scores_are_the_libraries_and_the_definitions():
    found = references.score(GENERATED, WANTED, draws=200)
    assert found["chrf"] == pytest.approx(CHRF(word_order=2).corpus_score(GENERATED, [WANTED]).score, abs=0.01)
    assert found["exact_match"] == 25.0  # "Hello  there" is "hello there" once whitespace and case are normalised
    assert references.score(WANTED, WANTED, draws=50)["rouge_l"] == 100.0
    for metric in references.METRICS:
        assert found["ci95"][metric]["low"] <= found[metric] <= found["ci95"][metric]["high"]


def test_the_paired_comparison_sees_a_better_model_and_no_difference_between_equals():
    worse = ["a dog", "bye", "no", "what"]
    better = references.compare(GENERATED, worse, WANTED, draws=300)
    assert better["chrf"]["verdict"] == "better" and better["chrf"]["difference"] > 0
    same = references.compare(GENERATED, GENERATED, WANTED, draws=50)
    assert all(same[m] == {"difference": 0, "low": 0, "high": 0, "p": 1.0, "verdict": "no significant difference"} for m in references.METRICS)
