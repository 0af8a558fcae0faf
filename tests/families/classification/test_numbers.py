"""A numeric label (data.label_type number) through every stage: a tiny BERT learns a score carried by keywords, and each
stage's numbers are recomputed here from the predictions it wrote."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from tests.support.data import make_scores
from tests.support.params import load, merge, run_stages, tiny_params

pytestmark = pytest.mark.xdist_group("numbers")


def number_params(model, **sections) -> dict:
    """Tiny text params with the label `score` as a number (what data.label_type number fills in spelled out)."""
    params = tiny_params(model, data={"label_column": "score", "label_type": "number", "on_bad_rows": "skip"},
                         train={"loss": "mse", "early_stopping": {"metric": "rmse", "patience": 0}, "epochs": 15},
                         compress={"prune": {"recover_epochs": 1}, "distill": {"epochs": 3}},
                         explain={"examples": 4, "ig_steps": 16, "random_draws": 3}, search={"metric": "rmse"})
    params["ensemble"] |= {"method": "auto", "members": {"tfidf": {"kind": "tfidf"}}}
    for section, values in sections.items():
        merge(params[section], values)
    return params


@pytest.fixture(scope="module")
def scored(tmp_path_factory, tiny_model):
    """ingest -> report on 150 scored texts, 3 of them with labels that are no number."""
    import contextlib

    root = tmp_path_factory.mktemp("numbers")
    rows = make_scores(150)
    rows["score"] = rows["score"].astype(object)
    rows.loc[[5, 17, 40], "score"] = ["n/a", "inf", ""]
    (root / "data/raw").mkdir(parents=True)
    rows.to_csv(root / "data/raw/tiny.csv", index=False)
    with contextlib.chdir(root):
        params = load(number_params(tiny_model))
        run_stages("ingest", "preprocess", "train", "evaluate", params=params)
        import importlib
        importlib.import_module("stages.member").run(params, "tfidf")
        run_stages("ensemble", "compress", "explain", "report", params=params)
    return root, rows


def test_labels_that_are_no_number_are_quarantined_with_the_reason_and_the_rest_standardised(scored):
    root, rows = scored
    quarantine = pd.read_csv(root / "data/quarantine/ingest.csv", keep_default_na=False)
    assert dict(zip(quarantine["source_row"], quarantine["problem"])) == {6: "label 'n/a' is not a number", 18: "label is infinite", 41: "empty label"}
    label_map = json.loads((root / "data/prepared/label_map.json").read_text())
    train = pd.read_parquet(root / "data/prepared/train.parquet")
    assert label_map["labels"] == ["value"] and label_map["target"]["column"] == "score"
    assert label_map["target"]["mean"] == pytest.approx(train["label"].mean()) and label_map["target"]["std"] == pytest.approx(train["label"].std(ddof=0))


def test_evaluate_scores_the_test_predictions_it_wrote_against_the_train_mean(scored):
    root, _ = scored
    metrics = json.loads((root / "reports/metrics.json").read_text())
    predictions = pd.read_csv(root / "reports/evaluate/predictions.csv")
    actual, predicted = predictions["actual"].to_numpy(), predictions["predicted"].to_numpy()
    assert metrics["rmse"] == pytest.approx(np.sqrt(np.mean((predicted - actual) ** 2)))
    assert metrics["mae"] == pytest.approx(np.mean(np.abs(predicted - actual)))
    assert metrics["spearman"] == pytest.approx(spearmanr(actual, predicted).statistic)
    assert metrics["ci95"]["mae"]["low"] <= metrics["mae"] <= metrics["ci95"]["mae"]["high"]
    assert metrics["vs_baseline"]["mae"]["verdict"] == "better" and metrics["r2"] > 0.5, metrics
    assert (root / "reports/evaluate/scatter.png").stat().st_size > 1000


def test_every_stage_scores_a_numeric_label_in_its_units(scored):
    root, _ = scored
    ensemble = json.loads((root / "reports/ensemble.json").read_text())
    predictions = pd.read_csv(root / "reports/ensemble/predictions.csv")
    assert set(ensemble["methods"]) == {"best_member", "soft_vote", "weighted"} and "temperatures" not in ensemble
    assert ensemble["rmse"] == pytest.approx(np.sqrt(np.mean(predictions["error"] ** 2)))
    mean = (predictions["primary_predicted"] + predictions["tfidf_predicted"]) / 2
    assert ensemble["methods"]["soft_vote"]["test"]["rmse"] == pytest.approx(np.sqrt(np.mean((mean - predictions["actual"]) ** 2)))
    tfidf = json.loads((root / "reports/member_summaries/tfidf.json").read_text())
    assert tfidf["test"]["spearman"] > 0.5  # ridge regression on TF-IDF learns the keywords too
    compress = json.loads((root / "reports/compress.json").read_text())
    assert set(compress["models"]) == {"teacher", "int8", "prune", "distill"} and compress["details"]["teacher"]["val_rmse_of_candidates"]
    int8 = compress["models"]["int8"]
    assert int8["mean_abs_difference_from_teacher"] < 0.1 * compress["models"]["teacher"]["mae"]  # int8 keeps the teacher's answers
    explain = json.loads((root / "reports/explain.json").read_text())
    assert explain["faithfulness"]["ig_beats_random"] is True  # deleting the top-attributed keywords moves the prediction most
    report = (root / "reports/report.html").read_text()
    assert "Test RMSE" in report and "The largest errors on the test split" in report and "confusion" not in report.lower()


def test_predict_and_serve_answer_the_value_evaluate_scored(scored):
    import contextlib

    from finetune.inference import load
    from tests.support.predicting import served

    root, rows = scored
    test = pd.read_parquet(root / "data/prepared/test.parquet")
    evaluated = pd.read_csv(root / "reports/evaluate/predictions.csv").set_index("id")["predicted"]
    pd.DataFrame({"text": test["input"]}).to_csv(root / "data/raw/new.csv", index=False)
    with contextlib.chdir(root):
        predicted = load("models/model").predict(root / "data/raw/new.csv").table
        assert np.allclose(predicted["label"], evaluated[test["id"]].to_numpy(), atol=1e-5)
        answer = served(load("models/model"), [{"text": test["input"].iloc[0]}])
        assert answer["predictions"][0]["label"] == pytest.approx(evaluated[test["id"].iloc[0]], abs=1e-5)
        from finetune.export import export

        export("models/model", root / "exported")
        card = (root / "exported/README.md").read_text()
        assert "- Label: `score`, a number (train mean" in card and "| rmse |" in card and "| accuracy |" not in card
        ensembled = load("models/ensemble").predict(root / "data/raw/new.csv").table
        chosen = pd.read_csv(root / "reports/ensemble/predictions.csv").set_index("id")["predicted"]
        assert np.allclose(ensembled["label"], chosen[test["id"]].to_numpy(), atol=1e-5)


def test_an_image_model_learns_a_number_and_its_pixels_member_is_a_ridge_regression(tmp_path, monkeypatch, tiny_image_model):
    from tests.support.data import write_sized_squares
    from tests.support.params import tiny_image_params

    monkeypatch.chdir(tmp_path)
    table = write_sized_squares(tmp_path, 120)
    raw = tiny_image_params(str(tiny_image_model), source=str(table.relative_to(tmp_path)),
                            data={"label_column": "side", "label_type": "number"}, train={"loss": "huber", "epochs": 10,
                                                                                         "early_stopping": {"metric": "rmse"}},
                            preprocess={"augment": {"random_resized_crop": None, "horizontal_flip": True}},
                            compress={"methods": ["distill"], "distill": {"epochs": 2}}, explain={"examples": 4, "ig_steps": 8},
                            search={"metric": "rmse"})
    raw["ensemble"] |= {"method": "auto", "members": {"pixels": {"kind": "pixels", "pixels": {"size": 8, "C": 1.0}}}}
    params = load(raw)
    run_stages("ingest", "preprocess", "train", "evaluate", params=params)
    import importlib
    importlib.import_module("stages.member").run(params, "pixels")
    run_stages("ensemble", "compress", "explain", params=params)
    metrics = json.loads(Path("reports/metrics.json").read_text())
    assert metrics["vs_baseline"]["rmse"]["verdict"] == "better" and metrics["spearman"] > 0.5, metrics
    pixels = json.loads(Path("reports/member_summaries/pixels.json").read_text())
    assert "rmse" in pixels["test"] and json.loads(Path("models/members/pixels/pixels.json").read_text())["size"] == 8
    explain = json.loads(Path("reports/explain.json").read_text())
    assert explain["examples"] == 4 and "every example" in json.loads(Path("reports/explain/attributions.json").read_text())["global"]
