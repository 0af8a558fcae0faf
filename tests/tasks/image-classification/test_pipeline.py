"""The image task end to end: the tiny image project run by the Prefect flow (every stage through DVC;
tests/conftest.py: image_repo), then read like a user would (dvc metrics, the report), and a
hyper-parameter search over image keys."""
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from tests.support.params import placed, tiny_image_params
from tests.support.repos import copy_repo, plots_page, repro, set_param, sh


def test_the_flow_runs_every_stage_of_the_image_dag_and_dvc_agrees(image_repo):
    root, states = image_repo
    assert states == {name: "Completed" for name in ("ingest", "preprocess", "train", "evaluate", "member@seed1", "member@pixels",
                                                     "ensemble", "compress", "explain", "report")}
    assert repro(root) == []  # the flow's results are DVC's: nothing left to run
    assert sh(["dvc", "status"], root).stdout.strip() == "Data and pipelines are up to date."


def test_metrics_come_from_real_predictions_and_every_member_is_scored(image_repo):
    root, _ = image_repo
    shown = next(iter(json.loads(sh(["dvc", "metrics", "show", "--json"], root).stdout).values()))["data"]
    metrics, combined = shown["reports/metrics.json"]["data"], shown["reports/ensemble.json"]["data"]
    predictions = pd.read_csv(root / "reports/evaluate/predictions.csv")
    assert metrics["accuracy"] == pytest.approx((predictions["actual"] == predictions["predicted"]).mean())
    assert metrics["accuracy"] > metrics["baseline"]["accuracy"] + 0.3  # 3 colours: the tiny ResNet learns them
    test = pd.read_parquet(root / "data/prepared/test.parquet")
    assert predictions["id"].tolist() == test["id"].tolist()  # the prepared test order
    assert set(combined["members"]) == {"primary", "seed1", "pixels"} and combined["members"]["pixels"]["test"]["accuracy"] > 0.8
    assert shown["reports/train.json"]["data"]["parameters"]["batchnorm"]["layers"] > 0
    wrong = pd.read_csv(root / "reports/evaluate/misclassified.csv")
    assert "image" in wrong.columns and wrong["image"].str.startswith("data/raw/images/").all()


def test_the_report_shows_images_the_augmentation_heatmaps_and_why_nothing_was_compressed(image_repo):
    root, _ = image_repo
    page = (root / "reports/report.html").read_text()
    for title in ("Summary", "Ensemble", "Compression", "Explanations", "Examples per class (train)", "Augmentation preview", "Data"):
        assert f">{title}" in page
    assert page.index(">Augmentation preview") < page.index(">Params")
    found = json.loads((root / "reports/preprocess.json").read_text())["profile"]
    assert found["inputs"]["modes"]["train"] == {"RGB": found["rows"]["train"]}  # the coloured squares
    assert {"setting": "channels", "value": 3, "why": "some images have colour"} in found["chosen"]
    assert found["near_duplicates"]["threshold"] == 0.995 and "some images have colour" in page
    assert page.count('<img alt="image" src="data:image/png;base64,') >= 3 * 8 + 3 * 7  # 8 per class + stored and 6 draws per class
    # the tiny model is a Hugging Face ResNet: no compressor fits it, and the report says why
    assert "Nothing was compressed: ResNetForImageClassification: Hugging Face CNNs cannot be compressed here" in page
    assert json.loads((root / "reports/compress.json").read_text())["skipped"].startswith("ResNetForImageClassification: Hugging Face CNNs")
    explained = json.loads((root / "reports/explain.json").read_text())
    assert explained["methods"] == ["integrated_gradients", "occlusion", "grad_cam"] and explained["examples"] == 6
    assert explained["faithfulness"]["patches"] == 16 and len(explained["faithfulness"]["top_ig_drop"]) == 5
    start = page.index(">Explanations</h2>")
    explanations = page[start:page.index("<h2", start)]
    assert explanations.count('src="data:image/png;base64,') >= 6 * 3  # each example: every method's heatmap on the image
    assert "http://" not in page and "https://" not in page  # self-contained


def test_editing_another_tasks_folder_leaves_the_image_pipeline_up_to_date(image_repo, tmp_path):
    root = copy_repo(image_repo[0], tmp_path / "copy")
    for module in (root / "finetune/tasks/text-classification").glob("*.py"):
        with module.open("a") as f:
            f.write("\n# an edit\n")
    assert sh(["dvc", "status"], root).stdout.strip() == "Data and pipelines are up to date."
    with (root / "finetune/tasks/image-classification/report.py").open("a") as f:
        f.write("\n# an edit\n")
    assert set(json.loads(sh(["dvc", "status", "--json"], root).stdout)) >= {"ingest", "train", "report"}  # its own folder: all of it


def test_changing_compress_or_explain_params_reruns_only_those_stages_and_the_report(image_repo, tmp_path):
    root = copy_repo(image_repo[0], tmp_path / "copy")
    set_param(root, "compress.methods", ["int8"])
    assert sorted(repro(root)) == ["compress", "explain", "report"]  # the reason names the methods asked for: new outputs
    set_param(root, "explain.ig_steps", 8)
    assert sorted(repro(root)) == ["explain", "report"]


def test_a_search_over_image_keys_trains_real_trials(image_repo, tiny_image_model, tmp_path, monkeypatch):
    from finetune import search
    from finetune.config.params import parse_params

    root = copy_repo(image_repo[0], tmp_path / "repo")  # the search writes reports/search/, a dep of report
    monkeypatch.chdir(root)
    raw = tiny_image_params(str(tiny_image_model), train={"epochs": 2})
    raw["search"] = {"method": "grid", "study": "images", "metric": "accuracy", "pruner": {"enabled": False},
                     "space": {"preprocess.image_size": {"choice": [8, 16]}, "preprocess.augment.horizontal_flip": {"choice": [False]}}}
    params = parse_params(placed(raw, root))
    study = search.run_search(params, lambda number: search.run_trial(params, number), log=lambda _: None)
    trials = sorted(study.trials, key=lambda t: t.params["preprocess.image_size"])
    assert [t.params["preprocess.image_size"] for t in trials] == [8, 16] and all(t.value is not None for t in trials)
    assert max(t.value for t in trials) > 0.6  # the features were rebuilt at each size (8x8 still shows the colour)


def test_new_images_predict_as_evaluated_and_serve_the_same(image_repo, tmp_path):
    from finetune import inference
    from tests.support.predicting import b64, evaluated, served

    root, _ = image_repo
    prepared = pd.read_parquet(root / "data/prepared/test.parquet")
    folder = tmp_path / "new"  # the test images in nested folders (no class folders needed), a text file and a broken image
    for origin in prepared["origin"]:
        target = folder / Path(origin).relative_to("data/raw/images")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(root / origin, target)
    (folder / "notes.txt").write_text("not an image")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n and nothing else")
    predictor = inference.load(root / "models/model")
    result = predictor.predict(folder)
    problems = {Path(b.content).name: b.problem for b in result.bad}
    assert problems["notes.txt"] == "not an image file (.txt)" and set(problems) == {"notes.txt", "broken.png"}
    assert problems["broken.png"].startswith(("truncated or corrupt image", "not an image of a format read here")), problems
    table = result.table.assign(origin=lambda t: [str(Path("data/raw/images") / Path(p).relative_to(folder)) for p in t["input"]])
    expected = evaluated(root).loc[prepared.set_index("origin").loc[table["origin"], "id"]].to_numpy()
    assert abs(table.filter(like="prob_").to_numpy() - expected).max() < 1e-4  # the same pixels, other batches
    answer = served(predictor, [{"image": b64(folder / Path(origin).relative_to("data/raw/images"))} for origin in table["origin"][:3]])
    assert [row["label"] for row in answer["predictions"]] == table["label"][:3].tolist()
    ensembled = inference.load(root / "models/ensemble").predict(folder).table  # primary + seed1 + the pixels regression
    staged = pd.read_csv(root / "reports/ensemble/predictions.csv").set_index("id").loc[prepared.set_index("origin").loc[table["origin"], "id"]]
    assert (ensembled["label"].to_numpy() == staged["predicted"].astype(str).to_numpy()).all()
    assert abs(ensembled.filter(like="prob_").to_numpy() - staged.filter(like="prob_").to_numpy()).max() < 1e-4


def test_an_exported_image_model_predicts_the_same_with_onnx(image_repo, tmp_path, monkeypatch):
    from finetune import inference
    from finetune.export import export

    root, _ = image_repo
    monkeypatch.chdir(root)
    checked = export("models/model", tmp_path / "shared", onnx=True)["onnx"]
    assert checked["agreement"] == 1.0 and checked["max_probability_difference"] < 1e-4
    card = (tmp_path / "shared/README.md").read_text()
    assert "pipeline_tag: image-classification" in card and "library_name: transformers" in card  # the tiny ResNet is a transformers one
    images = root / "data/raw/images"
    torch_out = inference.load(tmp_path / "shared").predict(images).table
    onnx_out = inference.load(tmp_path / "shared", backend="onnx").predict(images).table
    assert (onnx_out["label"] == torch_out["label"]).all()
    from PIL import Image
    from transformers import pipeline

    classify = pipeline("image-classification", model=str(tmp_path / "shared"))
    theirs = [classify(Image.open(path))[0]["label"] for path in torch_out["input"]]
    # its own resizing rounds differently (16 px from 12 px images here): the labels nearly always agree
    assert (torch_out["label"] == theirs).mean() >= 0.9


def test_dvc_plots_show_renders_every_picture_and_curve_of_the_run(tmp_path, image_repo):
    plots_page(image_repo[0], tmp_path / "plots")
