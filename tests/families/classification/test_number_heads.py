"""A number head beside a class head (data.number_heads, finetune/data/heads.py): the masked loss on its own, then a tiny
BERT learns a keyword score and the mood it implies through every stage, and each stage's numbers for each head are
recomputed here from the files it wrote."""
import contextlib
import json

import numpy as np
import pandas as pd
import pytest
import torch

from finetune.data.heads import IGNORE, Heads
from finetune.training.head_loss import HeadLoss
from tests.support.data import make_scores
from tests.support.params import load, run_stages, tiny_params

pytestmark = pytest.mark.xdist_group("number-heads")

MIXED = Heads({"mood": ["negative", "neutral", "positive"], "score": ["value"]}, {"score": {"mean": 1.0, "std": 2.0, "column": "score"}})


def test_a_number_heads_loss_is_the_squared_error_of_its_standardised_label_where_it_has_one():
    torch.manual_seed(0)
    logits = torch.randn(4, 4, requires_grad=True)
    labels = torch.tensor([[0, 3.0], [IGNORE, 1.0], [2, float("nan")], [1, -1.0]])
    mood, score = HeadLoss(MIXED, {}).per_head(logits, labels)
    assert torch.isclose(mood, torch.nn.functional.cross_entropy(logits[[0, 2, 3], :3], torch.tensor([0, 2, 1])))
    wanted = (torch.tensor([3.0, 1.0, -1.0]) - 1.0) / 2.0  # rows 0, 1, 3: row 2 has no score
    assert torch.isclose(score, ((logits[[0, 1, 3], 3] - wanted) ** 2).mean())
    (mood + score).backward()
    assert logits.grad[2, 3] == 0 and torch.all(logits.grad[1, :3] == 0)  # each missing label: exactly no gradient
    assert logits.grad[2, :3].abs().sum() > 0 and logits.grad[1, 3] != 0


def mixed_rows(n: int = 180) -> pd.DataFrame:
    """make_scores' texts with `score` (a number) and `mood` (its sign: negative / neutral / positive); a tenth of the rows
    miss their mood, another tenth their score, one score is no number."""
    rows = make_scores(n)
    rows["mood"] = np.select([rows["score"] > 0.5, rows["score"] < -0.5], ["positive", "negative"], "neutral")
    rows["score"] = rows["score"].astype(object)
    rows.loc[rows.index % 10 == 3, "mood"] = None
    rows.loc[rows.index % 10 == 7, "score"] = None
    rows.loc[11, "score"] = "lots"
    return rows


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("number-heads")
    (root / "data/raw").mkdir(parents=True)
    mixed_rows().to_csv(root / "data/raw/tiny.csv", index=False)
    raw = tiny_params(tiny_model, data={"label_columns": {"mood": "mood", "score": "score"}, "number_heads": ["score"], "on_bad_rows": "skip"},
                      train={"epochs": 15, "eval_steps": 20, "early_stopping": {"metric": "score.rmse", "patience": 0}},
                      compress={"prune": {"recover_epochs": 1}, "distill": {"epochs": 3}},
                      explain={"examples": 4, "ig_steps": 16, "random_draws": 3})
    raw["ensemble"] |= {"method": "auto", "members": {"tfidf": {"kind": "tfidf"}}}
    with contextlib.chdir(root):
        params = load(raw)
        run_stages("ingest", "preprocess", "train", "evaluate", params=params)
        import importlib
        importlib.import_module("stages.member").run(params, "tfidf")
        run_stages("ensemble", "compress", "explain", "report", params=params)
    return root


def _json(root, path):
    return json.loads((root / path).read_text())


def test_the_number_head_is_standardised_on_train_and_a_label_that_is_no_number_quarantined(mixed):
    quarantine = pd.read_csv(mixed / "data/quarantine/ingest.csv", keep_default_na=False)
    assert dict(zip(quarantine["source_row"], quarantine["problem"])) == {12: "head score: label 'lots' is not a number"}
    label_map = _json(mixed, "data/prepared/label_map.json")
    assert label_map["heads"] == {"mood": ["negative", "neutral", "positive"], "score": ["value"]}
    labels = np.array(pd.read_parquet(mixed / "data/prepared/train.parquet")["label"].tolist())
    scores = labels[~np.isnan(labels[:, 1]), 1]
    assert label_map["targets"]["score"]["mean"] == pytest.approx(scores.mean()) and np.isnan(labels[:, 1]).any()
    assert label_map["targets"]["score"]["std"] == pytest.approx(scores.std())
    assert {"score.rmse", "score.spearman", "mood.f1_macro", "f1_macro"} <= set(_json(mixed, "reports/train.json")["val"])
    args = _json(mixed, "models/model/training_args.json")  # selected on the number head: the lower rmse the better
    assert args["metric_for_best_model"] == "score.rmse" and args["greater_is_better"] is False


def test_evaluate_scores_each_head_on_its_labelled_test_rows(mixed):
    metrics = _json(mixed, "reports/metrics.json")
    labels = np.array(pd.read_parquet(mixed / "data/prepared/test.parquet")["label"].tolist())
    score = pd.read_csv(mixed / "reports/evaluate/score/predictions.csv")
    assert len(score) == int((~np.isnan(labels[:, 1])).sum())
    assert metrics["heads"]["score"]["rmse"] == pytest.approx(np.sqrt(np.mean((score["predicted"] - score["actual"]) ** 2)))
    assert metrics["heads"]["score"]["vs_baseline"]["mae"]["verdict"] == "better", metrics["heads"]["score"]  # learnt from the keywords
    mood = pd.read_csv(mixed / "reports/evaluate/mood/predictions.csv")
    assert len(mood) == int((labels[:, 0] != IGNORE).sum())
    assert metrics["heads"]["mood"]["accuracy"] == pytest.approx(float((mood["actual"] == mood["predicted"]).mean()))
    assert metrics["f1_macro"] == metrics["heads"]["mood"]["f1_macro"]  # the means are over the class heads


def test_ensemble_compress_and_explain_treat_the_number_head_as_a_number(mixed):
    ensemble = _json(mixed, "reports/ensemble.json")["heads"]
    predictions = pd.read_csv(mixed / "reports/ensemble/score/predictions.csv")
    assert set(ensemble["score"]["methods"]) == {"best_member", "soft_vote", "weighted"}
    assert ensemble["score"]["rmse"] == pytest.approx(np.sqrt(np.mean(predictions["error"] ** 2)))
    assert "stacking" in ensemble["mood"]["methods"]
    assert (mixed / "models/members/tfidf/score/tfidf.json").is_file()  # the classical member: a ridge regression for the score
    compress = _json(mixed, "reports/compress.json")
    evaluated = _json(mixed, "reports/metrics.json")["heads"]["score"]["rmse"]
    assert compress["models"]["teacher"]["heads"]["score"]["rmse"] == pytest.approx(evaluated, abs=1e-4)
    for name, row in compress["models"].items():
        assert set(row["heads"]) == {"mood", "score"} and np.isfinite(row["heads"]["score"]["rmse"]), name
    pooled = pd.read_csv(mixed / "reports/compress/predictions.csv")
    assert pooled["actual"].str.startswith("mood: ").all()  # the pooled class pairs hold the class heads only
    explained = _json(mixed, "reports/explain/attributions.json")["heads"]["score"]["examples"]
    assert len(explained) == 4 and all(isinstance(e["predicted"], float) for e in explained)
    report = (mixed / "reports/report.html").read_text()
    for text in ("Test RMSE (score)", "The largest errors on the test split (score)", "rmse (score)", "Test macro F1 (mood)"):
        assert text in report, text


def test_predict_and_the_model_card_give_the_number_head_its_value(mixed):
    from finetune.export import export
    from finetune.inference import load as load_model

    test = pd.read_parquet(mixed / "data/prepared/test.parquet")
    pd.DataFrame({"text": test["input"]}).to_csv(mixed / "data/raw/new.csv", index=False)
    evaluated = pd.read_csv(mixed / "reports/evaluate/score/predictions.csv").set_index("id")["predicted"]
    with contextlib.chdir(mixed):
        predicted = load_model("models/model").predict(mixed / "data/raw/new.csv").table
        scored = test["id"].isin(evaluated.index).to_numpy()
        assert np.allclose(predicted["score"].to_numpy()[scored], evaluated[test["id"][scored]].to_numpy(), atol=1e-5)
        assert {"mood", "mood.prob_positive"} <= set(predicted.columns) and "score.prob_value" not in predicted.columns
        ensembled = load_model("models/ensemble").predict(mixed / "data/raw/new.csv").table
        chosen = pd.read_csv(mixed / "reports/ensemble/score/predictions.csv").set_index("id")["predicted"]
        assert np.allclose(ensembled["score"].to_numpy()[scored], chosen[test["id"][scored]].to_numpy(), atol=1e-5)
        export("models/model", mixed / "exported")
    assert "- Head `score`: column `score`, a number (train mean" in (mixed / "exported/README.md").read_text()


@pytest.mark.parametrize("data, message", [
    ({"label_columns": ["mood", "score"], "number_heads": ["mood", "score"]}, "keep at least one class head"),
    ({"label_columns": ["mood", "score"], "number_heads": ["colour"]}, r"number_heads \['colour'\] are not heads"),
    ({"number_heads": ["score"]}, "number_heads names heads of label_columns"),
    ({"label_columns": ["mood", "score"], "label_type": "number"}, "name the heads that are numbers in number_heads"),
])
def test_number_heads_params_are_checked(workdir, tiny_model, data, message):
    (workdir / "data/raw").mkdir(parents=True)
    mixed_rows(30).to_csv(workdir / "data/raw/tiny.csv", index=False)
    with pytest.raises(Exception, match=message):
        load(tiny_params(tiny_model, data=data))
