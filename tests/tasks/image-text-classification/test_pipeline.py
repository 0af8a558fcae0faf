"""The image + text task end to end: the tiny project (tests/conftest.py: image_text_repo) through `dvc repro`, the
fused model beside its image-only and text-only members, then read like a user would (dvc metrics, the report)."""
import json
import shutil

import pandas as pd
import pytest

from tests.support.repos import copy_repo, planned, plots_page, set_param, sh


def test_dvc_repro_runs_the_fused_model_its_unimodal_members_and_the_ensemble(image_text_repo):
    root, ran = image_text_repo
    assert set(ran) == {"ingest", "preprocess", "train", "evaluate", "member@image_only", "member@text_only", "ensemble", "compress",
                        "explain", "report"}
    assert sh(["dvc", "status"], root).stdout.strip() == "Data and pipelines are up to date."
    shown = next(iter(json.loads(sh(["dvc", "metrics", "show", "--json"], root).stdout).values()))["data"]
    metrics, combined = shown["reports/metrics.json"]["data"], shown["reports/ensemble.json"]["data"]
    predictions = pd.read_csv(root / "reports/evaluate/predictions.csv")
    assert metrics["accuracy"] == pytest.approx((predictions["actual"] == predictions["predicted"]).mean())
    assert set(combined["members"]) == {"primary", "image_only", "text_only"}
    image_only = json.loads((root / "models/members/image_only/image_text_model.json").read_text())
    assert list(image_only["encoder_strategies"]) == ["image_encoder"]  # one encoder, nothing fused


def test_the_report_shows_each_example_as_its_thumbnail_and_text_and_why_nothing_was_compressed_or_explained(image_text_repo):
    root, _ = image_text_repo
    page = (root / "reports/report.html").read_text()
    start = page.index(">Worst errors") if ">Worst errors" in page else page.index(">Summary")
    assert '<img alt="image" src="data:image/png;base64,' in page[start:]
    assert "square?" in page  # the question beside its picture
    assert "image + text models have no compression methods yet" in page and "has no explainer yet" in page
    assert json.loads((root / "reports/compress.json").read_text())["skipped"].startswith("image + text models have no compression methods")
    assert (root / "models/compressed/README.txt").read_text().startswith("compress: skipped: image + text models")  # every output, saying why


def test_a_fusion_change_retrains_the_primary_and_its_members_but_not_the_data(image_text_repo, tmp_path):
    """DVC's plan (--dry), not a rerun: what the stages do on a rerun is the shared run's."""
    root = copy_repo(image_text_repo[0], tmp_path / "copy")
    set_param(root, "train.fusion", "concat")
    assert planned(root) == {"train", "evaluate", "member@image_only", "member@text_only", "ensemble", "compress", "explain", "report"}


def test_new_pairs_predict_as_evaluated_and_serve_the_same(image_text_repo, tmp_path):
    from finetune import inference
    from tests.support.predicting import b64, evaluated, served

    root, _ = image_text_repo
    table = pd.read_csv(root / "data/raw/vqa/pairs.csv").drop(columns="label")  # new rows: no label
    table.loc[len(table)] = {"image": "../../../../etc/hostname", "text": "is there a red square?"}  # outside the table's folder
    table.to_csv(tmp_path / "pairs.csv", index=False)
    shutil.copytree(root / "data/raw/vqa/images", tmp_path / "images")  # image paths are relative to the table's folder
    predictor = inference.load(root / "models/model")
    result = predictor.predict(tmp_path / "pairs.csv")
    assert [(b.row, "outside" in b.problem) for b in result.bad] == [(len(table), True)]
    prepared = pd.read_parquet(root / "data/prepared/test.parquet")
    rows = prepared["origin"].str.removeprefix("row ").astype(int)
    predicted = result.table.set_index("row").loc[rows]
    assert abs(predicted.filter(like="prob_").to_numpy() - evaluated(root).loc[prepared["id"]].to_numpy()).max() < 1e-4
    first = table.iloc[rows.iloc[0] - 1]
    answer = served(predictor, [{"image": b64(root / "data/raw/vqa" / first["image"]), "text": first["text"]}])
    assert answer["predictions"][0]["label"] == predicted["label"].iloc[0]


def test_dvc_plots_show_renders_every_picture_and_curve_of_the_run(tmp_path, image_text_repo):
    plots_page(image_text_repo[0], tmp_path / "plots")
