import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from stages import evaluate
from tests.support.params import load, tiny_params


def test_metrics_come_from_the_real_test_predictions(trained_workdir, tiny_model):
    result = evaluate.run(load(tiny_params(tiny_model)))

    test = pd.read_parquet("data/prepared/test.parquet")
    predictions = pd.read_csv("reports/evaluate/predictions.csv")
    # one row per test example, in the test split's own order (never length-grouped)
    assert predictions["id"].tolist() == test["id"].tolist()
    labels = ["negative", "neutral", "positive"]
    assert predictions["actual"].tolist() == [labels[i] for i in test["label"]]
    probs = predictions[[f"prob_{label}" for label in labels]].to_numpy()
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert (np.array(labels)[probs.argmax(axis=1)] == predictions["predicted"]).all()

    correct = predictions["actual"] == predictions["predicted"]
    assert result["accuracy"] == correct.mean()
    assert json.loads(open("reports/metrics.json").read()) == result
    assert result["accuracy"] > 0.8
    for label in labels:
        rows = predictions[predictions["actual"] == label]
        assert result["per_class"][label]["support"] == len(rows)
        assert result["per_class"][label]["recall"] == (rows["predicted"] == label).mean()
    # majority baseline: the most frequent TRAIN label for every test row (train is balanced: ties -> first)
    assert result["baseline"]["accuracy"] == (predictions["actual"] == "negative").mean()
    assert result["f1_macro"] > result["baseline"]["f1_macro"]
    # the uncertainty: intervals around the observed scores, and the model against the baseline on the same rows
    for scores in (result, result["baseline"]):
        for name in ("accuracy", "f1_macro"):
            assert scores["ci95"][name]["low"] <= scores[name] <= scores["ci95"][name]["high"]
    versus = result["vs_baseline"]["accuracy"]
    assert versus["difference"] == pytest.approx(result["accuracy"] - result["baseline"]["accuracy"], abs=1e-4)
    assert versus["verdict"] == "better" and versus["p"] < 0.05

    wrong = pd.read_csv("reports/evaluate/misclassified.csv")
    assert len(wrong) == (~correct).sum()
    assert set(wrong["id"]) == set(predictions.loc[~correct, "id"])
    if len(wrong):
        texts = dict(zip(test["id"], test["input"]))
        assert all(texts[i] == t for i, t in zip(wrong["id"], wrong["text"]))
        assert wrong["confidence"].is_monotonic_decreasing
    with Image.open("reports/evaluate/confusion.png") as image:
        assert image.size[0] > 200


def test_baseline_uses_the_train_majority(trained_workdir, tiny_model):
    train = pd.read_parquet("data/prepared/train.parquet")
    train.loc[train.index[:20], "label"] = 2  # make "positive" the train majority
    train.to_parquet("data/prepared/train.parquet")
    result = evaluate.run(load(tiny_params(tiny_model)))
    assert result["baseline"]["strategy"] == "majority class (positive)"
    actual = pd.read_csv("reports/evaluate/predictions.csv")["actual"]
    assert result["baseline"]["accuracy"] == (actual == "positive").mean()
