"""`finetune predict` on the text model the session's tiny project trained (tests/conftest.py text_repo_snapshot, READ
ONLY: predictions go to tmp_path): new rows get exactly the training-time features and the evaluate stage's probabilities,
the folder loads in Hugging Face's pipeline(), and what cannot be predicted is refused or rejected with the reason."""
import json

import numpy as np
import pandas as pd
import pytest

from finetune import inference
from finetune.errors import UserError


@pytest.fixture
def project(text_repo_snapshot):
    return text_repo_snapshot[0]


def new_rows(project, tmp_path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The raw rows of the test split as a new user table (another column order, an extra column, no label), and the
    prepared test split."""
    prepared = pd.read_parquet(project / "data/prepared/test.parquet")
    raw = pd.read_csv(project / "data/raw/tiny.csv")
    rows = prepared["origin"].str.removeprefix("row ").astype(int).to_numpy()
    table = pd.DataFrame({"note": "x", "text": raw["text"].to_numpy()[rows - 1]})
    return table, prepared


def test_new_rows_get_the_training_features_and_the_evaluated_probabilities(project, tmp_path):
    table, prepared = new_rows(project, tmp_path)
    table.loc[len(table)] = {"note": "empty", "text": "   "}  # refused, as preprocess refuses it
    table.to_csv(tmp_path / "new.csv", index=False)
    predictor = inference.load(project / "models/model")
    features, _, bad = predictor.prepare(tmp_path / "new.csv")
    assert [list(ids) for ids in features["input_ids"]] == [list(ids) for ids in prepared["input_ids"]]
    assert [(b.row, b.problem) for b in bad] == [(len(table), "empty text")]

    summary = inference.predict_file(project / "models/model", tmp_path / "new.csv", tmp_path / "out.csv", batch_size=4)
    assert summary["rows"] == len(prepared) and summary["rejected"] == 1
    out = pd.read_csv(tmp_path / "out.csv")
    labels = json.loads((project / "data/prepared/label_map.json").read_text())["labels"]
    assert list(out.columns) == ["row", "input", "label", *(f"prob_{label}" for label in labels)]
    assert out["input"].tolist() == table["text"].tolist()[:-1] and out["row"].tolist() == list(range(1, len(prepared) + 1))
    evaluated = pd.read_parquet(project / "reports/evaluate/probabilities.parquet").query("split == 'test'").set_index("id")
    expected = evaluated.loc[prepared["id"], [f"prob_{label}" for label in labels]].to_numpy()
    # the same features in other batches (sorted by length, 4 rows): only padding differs, masked out; float32 sums
    # over a few hundred hidden units agree to ~1e-6
    assert np.abs(out[[f"prob_{label}" for label in labels]].to_numpy() - expected).max() < 1e-4
    assert (out["label"] == [labels[i] for i in expected.argmax(axis=1)]).all()
    rejects = pd.read_csv(tmp_path / "out.rejects.csv")
    assert rejects[["row", "problem"]].values.tolist() == [[len(table), "empty text"]]


def test_the_model_folder_loads_in_hugging_face_pipeline(project, tmp_path):
    from transformers import pipeline

    table, _ = new_rows(project, tmp_path)
    table.to_csv(tmp_path / "new.csv", index=False)
    inference.predict_file(project / "models/model", tmp_path / "new.csv", tmp_path / "out.jsonl")
    ours = pd.read_json(tmp_path / "out.jsonl", lines=True)
    classify = pipeline("text-classification", model=str(project / "models/model"), top_k=None)
    theirs = classify(table["text"].tolist())
    assert [max(scores, key=lambda s: s["score"])["label"] for scores in theirs] == ours["label"].tolist()
    for scores, (_, row) in zip(theirs, ours.iterrows()):
        for score in scores:
            assert score["score"] == pytest.approx(row[f"prob_{score['label']}"], abs=1e-4)


def test_what_cannot_be_predicted_is_refused_before_any_work(project, tmp_path):
    pd.DataFrame({"review": ["good"]}).to_csv(tmp_path / "other.csv", index=False)
    with pytest.raises(UserError, match=r"missing column\(s\) text_column = 'text'; columns found: review"):
        inference.predict_file(project / "models/model", tmp_path / "other.csv", tmp_path / "out.csv")
    with pytest.raises(UserError, match=r"--output .*out.txt: expected a file ending in .csv, .jsonl, .parquet"):
        inference.predict_file(project / "models/model", tmp_path / "other.csv", tmp_path / "out.txt")
    with pytest.raises(UserError, match=r"no pipeline.json in it"):
        inference.predict_file(project / "data/prepared", tmp_path / "other.csv", tmp_path / "out.csv")
    with pytest.raises(UserError, match=r"--input .*missing.csv: no such file"):
        inference.predict_file(project / "models/model", tmp_path / "missing.csv", tmp_path / "out.csv")
    assert not list(tmp_path.glob("out*"))  # nothing half-written


def test_compressed_and_member_models_predict_too(project, tmp_path):
    table, prepared = new_rows(project, tmp_path)
    table.to_csv(tmp_path / "new.csv", index=False)
    compressed = json.loads((project / "reports/compress.json").read_text())
    folders = [project / "models/compressed" / name for name in ("int8", "pruned", "distilled") if (project / "models/compressed" / name).is_dir()]
    assert folders, compressed
    teacher = compressed["details"]["teacher"]["name"]
    teacher_dir = project / ("models/model" if teacher == "primary" else f"models/members/{teacher}")
    decisions = inference.load(teacher_dir).predict(tmp_path / "new.csv").table["label"]
    for folder in folders:
        out = inference.load(folder).predict(tmp_path / "new.csv").table
        probs = out.filter(like="prob_").to_numpy()
        assert np.allclose(probs.sum(axis=1), 1, atol=1e-5) and len(out) == len(prepared)
        if folder.name == "int8":  # int8 keeps the teacher's decisions on nearly every row (compress.json: agreement)
            assert (out["label"] == decisions).mean() >= 0.8


def ensemble_matches_its_stage(root, tmp_path) -> str:
    """Predict the test rows with models/ensemble: the ensemble stage's own test probabilities (reports/ensemble/
    predictions.csv) come back, row by row. Returns the method applied."""
    table, prepared = new_rows(root, tmp_path)
    table.to_csv(tmp_path / "new.csv", index=False)
    out = inference.load(root / "models/ensemble").predict(tmp_path / "new.csv").table
    staged = pd.read_csv(root / "reports/ensemble/predictions.csv").set_index("id").loc[prepared["id"]]
    assert (out["label"].to_numpy() == staged["predicted"].astype(str).to_numpy()).all()
    # members' probabilities recomputed in other batches (~1e-6 apart), then the same calibration and combination
    assert np.abs(out.filter(like="prob_").to_numpy() - staged.filter(like="prob_").to_numpy()).max() < 1e-4
    return json.loads((root / "models/ensemble/ensemble.json").read_text())["heads"][""]["method"]


def test_the_ensemble_is_an_artifact_that_predicts_what_its_stage_did(project, tmp_path):
    assert ensemble_matches_its_stage(project, tmp_path) == json.loads((project / "reports/ensemble.json").read_text())["method"]


def test_export_writes_a_model_card_from_the_reports_and_a_checked_onnx_graph(project, tmp_path, monkeypatch):
    from transformers import pipeline

    from finetune.export import export

    monkeypatch.chdir(project)  # the project's reports and prepared test split; the export goes to tmp_path
    summary = export("models/model", tmp_path / "shared", onnx=True)
    onnx = summary["onnx"]
    assert onnx["agreement"] == 1.0 and onnx["max_probability_difference"] < 1e-4  # one graph, two runtimes: float rounding
    card = (tmp_path / "shared/README.md").read_text()
    metrics = json.loads((project / "reports/metrics.json").read_text())
    assert card.startswith("---\nlibrary_name: transformers\npipeline_tag: text-classification\n")
    assert f"| accuracy | {metrics['accuracy']:.4f} (95 % interval {metrics['ci95']['accuracy']['low']:.4f} to" in card
    assert f"| accuracy | {metrics['baseline']['accuracy']:.4f}" in card and "majority class" in card
    assert "at commit `" in card and "## Intended use and limits" in card
    table, _ = new_rows(project, tmp_path)
    table.to_csv(tmp_path / "new.csv", index=False)
    torch_out = inference.load(tmp_path / "shared").predict(tmp_path / "new.csv").table
    onnx_out = inference.load(tmp_path / "shared", backend="onnx").predict(tmp_path / "new.csv").table
    assert (onnx_out["label"] == torch_out["label"]).all()
    assert np.abs(onnx_out.filter(like="prob_").to_numpy() - torch_out.filter(like="prob_").to_numpy()).max() < 1e-4
    assert pipeline("text-classification", model=str(tmp_path / "shared"))(table["text"][0])[0]["label"] == torch_out["label"][0]
    with pytest.raises(UserError, match="exists; choose a new folder or pass --force"):
        export("models/model", tmp_path / "shared")
    with pytest.raises(UserError, match="--backend onnx: no model.onnx in"):
        inference.load(project / "models/model", backend="onnx")


def test_an_int8_text_model_exports_as_its_onnxruntime_graph_and_says_what_loads_it(project, tmp_path, monkeypatch):
    from finetune.export import export

    monkeypatch.chdir(project)
    export("models/compressed/int8", tmp_path / "int8")
    assert (tmp_path / "int8/model.int8.onnx").is_file() and not list((tmp_path / "int8").glob("*.safetensors"))
    card = (tmp_path / "int8/README.md").read_text()
    assert "Other libraries: an int8 onnxruntime graph (model.int8.onnx)" in card and "pipeline(\"text-classification\"" not in card
    table, _ = new_rows(project, tmp_path)
    table.to_csv(tmp_path / "new.csv", index=False)
    exported = inference.load(tmp_path / "int8").predict(tmp_path / "new.csv").table
    original = inference.load(project / "models/compressed/int8").predict(tmp_path / "new.csv").table
    pd.testing.assert_frame_equal(exported, original)
    with pytest.raises(UserError, match="--onnx: .*already is an onnxruntime model"):
        export("models/compressed/int8", tmp_path / "again", onnx=True)
