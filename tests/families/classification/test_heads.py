"""Several heads (finetune/data/heads.py, finetune/training/head_loss.py), the classification family's component: the
masked, weighted loss on its own, and the text task's stages run in-process on two label columns with missing labels (each
head scored, ensembled, explained and reported; compressed models scored on every labelled (row, head) pair), the image
task's heads, uncertainty weights learned and resumed, bad input refused, the old key refused with the new one."""
from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
import torch

from finetune import paths
from finetune.data.heads import IGNORE, Heads
from finetune.errors import UserError
from finetune.training.head_loss import STATE_FILE, HeadLoss
from tests.support.data import make_rows
from tests.support.params import load, run_stages, tiny_params

HEADS = Heads({"a": ["x", "y", "z"], "b": ["p", "q"]})


def test_a_missing_label_gives_its_head_exactly_zero_gradient():
    torch.manual_seed(0)
    logits = torch.randn(4, 5, requires_grad=True)
    labels = torch.tensor([[0, 1], [IGNORE, 0], [2, IGNORE], [1, 1]])
    HeadLoss(HEADS, {})(logits, labels).backward()
    assert torch.all(logits.grad[1, :3] == 0) and torch.all(logits.grad[2, 3:] == 0)  # the missing (row, head) pairs
    assert torch.all(logits.grad[1, 3:] != 0) and torch.all(logits.grad[2, :3] != 0)  # the same rows' other heads learn
    # each head averages over ITS labelled rows: head a over rows 0, 2, 3 only
    expected_a = torch.nn.functional.cross_entropy(logits[[0, 2, 3], :3], labels[[0, 2, 3], 0])
    assert torch.isclose(HeadLoss(HEADS, {}).per_head(logits, labels)[0], expected_a)


def test_fixed_weights_scale_each_heads_loss():
    torch.manual_seed(1)
    logits, labels = torch.randn(6, 5), torch.tensor([[0, 1], [1, 0], [2, 1], [0, 0], [1, 1], [2, 0]])
    a, b = HeadLoss(HEADS, {}).per_head(logits, labels)
    assert torch.isclose(HeadLoss(HEADS, {"a": 2.0, "b": 0.5})(logits, labels), 2 * a + 0.5 * b)
    assert torch.isclose(HeadLoss(HEADS, {"b": 3.0})(logits, labels), a + 3 * b)  # an unnamed head weighs 1
    # uncertainty weights start at log-variance 0: the plain sum, and s moves the loss as exp(-s) L + s
    loss = HeadLoss(HEADS, "uncertainty")
    assert torch.isclose(loss(logits, labels), a + b)
    with torch.no_grad():
        loss.log_variance.copy_(torch.tensor([1.0, -1.0]))
    assert torch.isclose(loss(logits, labels), np.exp(-1) * a + 1 + np.exp(1) * b - 1)


def test_a_batch_without_a_heads_labels_adds_nothing_for_it():
    logits = torch.randn(2, 5, requires_grad=True)
    losses = HeadLoss(HEADS, {}).per_head(logits, torch.tensor([[IGNORE, 0], [IGNORE, 1]]))
    assert losses[0].item() == 0 and torch.isfinite(losses).all()


def multitask_rows(n: int = 150) -> pd.DataFrame:
    """make_rows' texts with two labels: sentiment (its keyword) and length (short: 5 words or fewer); a tenth of the
    rows miss their sentiment, another tenth their length."""
    rows = make_rows(n)
    rows["length"] = np.where(rows["text"].str.split().map(len) <= 5, "short", "long")
    rows = rows.rename(columns={"label": "sentiment"})
    rows.loc[rows.index % 10 == 3, "sentiment"] = None
    rows.loc[rows.index % 10 == 7, "length"] = ""  # blank counts as missing
    return rows


def multitask_params(model, **train) -> dict:
    params = tiny_params(model, data={"label_columns": {"sentiment": "sentiment", "length": "length"}}, train={"epochs": 6, **train})
    params["ensemble"]["members"] = {"tfidf": {"kind": "tfidf"}}  # one classical model per head
    return params


@pytest.fixture(scope="module")
def multitask_project(tmp_path_factory, tiny_model):
    """A scratch project where every classifier stage ran in-process on the two-label table (uncertainty weights)."""
    import os

    root = tmp_path_factory.mktemp("multitask")
    (root / "data/raw").mkdir(parents=True)
    multitask_rows().to_csv(root / "data/raw/tiny.csv", index=False)
    before = os.getcwd()
    os.chdir(root)
    try:
        params = load(multitask_params(tiny_model, head_weights="uncertainty", eval_steps=10))
        run_stages("ingest", "preprocess", "train", "evaluate", params=params)
        from stages import member

        member.run(params, "tfidf")
        run_stages("ensemble", "compress", "explain", "report", params=params)
    finally:
        os.chdir(before)
    return root


def test_each_head_is_trained_scored_and_reported(multitask_project):
    root = multitask_project
    label_map = json.loads((root / paths.LABEL_MAP).read_text())
    assert label_map["heads"] == {"sentiment": ["negative", "neutral", "positive"], "length": ["long", "short"]}
    assert label_map["labels"] == ["sentiment: negative", "sentiment: neutral", "sentiment: positive", "length: long", "length: short"]
    test = pd.read_parquet(root / paths.PREPARED / "test.parquet")
    targets = np.array(test["label"].tolist())
    assert (targets == IGNORE).any(axis=0).all()  # both heads have test rows without their label
    result = json.loads((root / paths.METRICS).read_text())
    for i, task in enumerate(["sentiment", "length"]):
        predictions = pd.read_csv(root / paths.EVALUATION / task / "predictions.csv")
        assert len(predictions) == int((targets[:, i] != IGNORE).sum())  # scored only where the label is known
        accuracy = float((predictions["actual"] == predictions["predicted"]).mean())
        assert result["heads"][task]["accuracy"] == pytest.approx(accuracy)
        assert (root / paths.EVALUATION / task / "confusion.png").stat().st_size > 1000
    assert result["accuracy"] == pytest.approx(np.mean([result["heads"][t]["accuracy"] for t in ("sentiment", "length")]))
    assert result["heads"]["length"]["accuracy"] > 0.9  # learnt (the tiny BERT needs more epochs for the sentiment keyword)
    train = json.loads((root / paths.TRAIN_SUMMARY).read_text())
    assert {"sentiment.f1_macro", "length.f1_macro", "f1_macro"} <= set(train["val"])
    learned = train["head_weights"]
    assert all(abs(w["log_variance"]) > 0.01 for w in learned.values())  # uncertainty weights moved from 0
    report = (root / paths.REPORT_HTML).read_text()
    for text in ("Test macro F1 (sentiment)", "Per class (test) (length)", "ensemble confusion matrix (length)", "sentiment: negative %",
                 "<th>accuracy (sentiment)</th>"):  # the compress table: each head's accuracy
        assert text in report
    ensemble = json.loads((root / paths.ENSEMBLE_METRICS).read_text())
    for i, task in enumerate(["sentiment", "length"]):  # each head ensembled on its own labelled test rows
        predictions = pd.read_csv(root / paths.ENSEMBLE / task / "predictions.csv")
        assert len(predictions) == int((targets[:, i] != IGNORE).sum())
        assert ensemble["heads"][task]["accuracy"] == pytest.approx(float((predictions["actual"] == predictions["predicted"]).mean()))
        assert set(ensemble["heads"][task]["members"]) == {"primary", "tfidf"}
    assert (root / paths.MEMBER_MODELS / "tfidf" / "length").is_dir()  # the classical member: one model per head
    compressed = json.loads((root / paths.COMPRESS_METRICS).read_text())
    pairs = int((targets != IGNORE).sum())  # every labelled (test row, head), pooled as "head: class" classes
    table = pd.read_csv(root / paths.COMPRESS / "predictions.csv")
    assert len(table) == pairs and str(pairs) in compressed["scored"]
    for name, row in compressed["models"].items():
        assert row["accuracy"] == pytest.approx(float((table["actual"] == table[f"{name}_predicted"]).mean()), abs=1e-4)
        length = table[table["actual"].str.startswith("length: ")]  # and each head's own accuracy, from the same table
        assert row["heads"]["length"]["accuracy"] == pytest.approx(float((length["actual"] == length[f"{name}_predicted"]).mean()), abs=1e-4)
    assert set(table["actual"]) <= set(label_map["labels"]) and {"int8", "pruned", "distilled"} <= set(os.listdir(root / paths.COMPRESSED))
    explained = json.loads((root / paths.EXPLAIN_METRICS).read_text())["heads"]
    attributions = json.loads((root / paths.EXPLAIN / "attributions.json").read_text())["heads"]
    for i, task in enumerate(["sentiment", "length"]):  # each head explained through a view of its own logits
        labelled = set(test["id"][targets[:, i] != IGNORE])
        assert explained[task]["examples"] == 6 and {e["id"] for e in attributions[task]["examples"]} <= labelled
        assert {e["predicted"] for e in attributions[task]["examples"]} <= set(label_map["heads"][task])
    assert "Faithfulness: deleting what the attributions rank highest" in report


def test_uncertainty_weights_are_checkpointed_and_resumed(tmp_path):
    from finetune.training.head_loss import HeadLoss as Loss

    loss = Loss(HEADS, "uncertainty")
    with torch.no_grad():
        loss.log_variance.copy_(torch.tensor([0.25, -0.5]))
    loss.save(tmp_path)
    resumed = Loss(HEADS, "uncertainty")
    resumed.load(tmp_path)
    assert resumed.log_variance.tolist() == [0.25, -0.5]
    (tmp_path / STATE_FILE).unlink()
    with pytest.raises(UserError, match=STATE_FILE):
        resumed.load(tmp_path)


@pytest.mark.parametrize("data, train, message", [
    ({"label_columns": ["sentiment", "sentiment"]}, {}, r"label_columns lists column\(s\) \['sentiment'\] twice"),
    ({"label_columns": {"a": "sentiment", "b": "sentiment"}}, {}, "twice"),
    ({"label_columns": {"sentiment": "sentiment", "length": "length"}}, {"head_weights": {"colour": 2}},
     r"head_weights: \['colour'\] not among the heads"),
    ({}, {"head_weights": {"sentiment": 2}}, "need data.label_columns"),
    ({"label_columns": {"sentiment": "sentiment", "length": "length"}}, {"early_stopping": {"metric": "colour.f1_macro"}},
     "sentiment.f1_macro"),
])
def test_heads_params_are_checked(workdir, tiny_model, data, train, message):
    (workdir / "data/raw").mkdir(parents=True)
    multitask_rows(30).to_csv(workdir / "data/raw/tiny.csv", index=False)
    params = tiny_params(tiny_model, data=data, train=train)
    with pytest.raises(Exception, match=message):
        load(params)


def test_a_head_without_any_label_is_refused_at_ingest(workdir, tiny_model):
    (workdir / "data/raw").mkdir(parents=True)
    multitask_rows(30).assign(length=None).to_csv(workdir / "data/raw/tiny.csv", index=False)
    with pytest.raises(UserError, match=r"no row has a label for head\(s\) length \(column 'length'\)"):
        params = multitask_params(tiny_model)
        params["data"]["on_bad_rows"] = "skip"  # the rows without sentiment now have no label at all
        run_stages("ingest", params=load(params))
    assert not (workdir / paths.INGESTED).exists()  # nothing half-written


def test_a_head_can_be_selected_on(workdir, tiny_model):
    (workdir / "data/raw").mkdir(parents=True)
    multitask_rows(60).to_csv(workdir / "data/raw/tiny.csv", index=False)
    params = load(multitask_params(tiny_model, epochs=2, early_stopping={"metric": "length.accuracy", "patience": 1}))
    run_stages("ingest", "preprocess", "train", params=params)
    args = json.loads((workdir / paths.MODEL / "training_args.json").read_text())
    assert args["metric_for_best_model"] == "length.accuracy"


def test_image_heads_train_on_a_table_with_two_label_columns(workdir, tiny_image_model):
    """The image task through the same heads: a table of generated images with their colour and a second label derived
    from it (warm / cool), a few of each missing; the tiny ResNet learns both and evaluate scores the reloaded model."""
    from tests.support.data import make_images
    from tests.support.params import tiny_image_params

    folder = workdir / "data/raw/images"
    folder.mkdir(parents=True)
    rows = []
    for i, (colour, image) in enumerate(make_images(20, size=16)):
        image.save(folder / f"{i}.png")
        rows.append({"image": f"{i}.png", "colour": None if i % 11 == 5 else colour,
                     "warmth": None if i % 13 == 6 else ("warm" if colour == "red" else "cool")})
    pd.DataFrame(rows).to_csv(folder / "labels.csv", index=False)
    params = tiny_image_params(str(tiny_image_model), source="data/raw/images/labels.csv",
                               data={"label_columns": ["colour", "warmth"]}, train={"head_weights": {"warmth": 0.5}})
    run_stages("ingest", "preprocess", "train", "evaluate", "explain", "report", params=load(params))
    result = json.loads((workdir / paths.METRICS).read_text())
    assert set(result["heads"]) == {"colour", "warmth"}
    explained = json.loads((workdir / paths.EXPLAIN_METRICS).read_text())["heads"]  # the pixel explainer, one head at a time
    assert set(explained) == {"colour", "warmth"} and all(r["examples"] == 6 for r in explained.values())
    assert result["heads"]["colour"]["accuracy"] > 0.8 and result["heads"]["warmth"]["accuracy"] > 0.8
    assert json.loads((workdir / paths.TRAIN_SUMMARY).read_text())["head_weights"] == {"colour": 1.0, "warmth": 0.5}


def test_distillation_of_several_heads_sums_each_heads_loss_and_masks_only_the_hard_term():
    from finetune.compression.distill import kd_loss

    torch.manual_seed(2)
    student, teacher = torch.randn(4, 5), torch.randn(4, 5)
    labels = torch.tensor([[0, 1], [IGNORE, 0], [2, IGNORE], [1, 1]])
    both = kd_loss(student, teacher, labels, 2.0, 0.5, sizes=[3, 2])
    a = kd_loss(student[[0, 2, 3], :3], teacher[[0, 2, 3], :3], labels[[0, 2, 3], 0], 2.0, 1.0) * 0.5 \
        + kd_loss(student[:, :3], teacher[:, :3], labels[:, 0], 2.0, 0.0) * 0.5  # soft term on every row, the missing one too
    b = kd_loss(student[[0, 1, 3], 3:], teacher[[0, 1, 3], 3:], labels[[0, 1, 3], 1], 2.0, 1.0) * 0.5 \
        + kd_loss(student[:, 3:], teacher[:, 3:], labels[:, 1], 2.0, 0.0) * 0.5
    assert torch.isclose(both, a + b)


def test_the_old_key_of_head_weights_is_refused_with_the_new_one(workdir, tiny_model):
    (workdir / "data/raw").mkdir(parents=True)
    multitask_rows(30).to_csv(workdir / "data/raw/tiny.csv", index=False)
    params = multitask_params(tiny_model)
    params["train"]["task_weights"] = {"length": 2}
    params["ensemble"]["members"]["seed1"] = {"kind": "finetune", "train": {"task_weights": "uncertainty"}}
    with pytest.raises(UserError) as error:
        load(params)
    assert "train.task_weights: renamed to train.head_weights" in str(error.value)
    assert "ensemble.members.seed1.train.task_weights: renamed to train.head_weights" in str(error.value)


def test_labels_that_are_lists_objects_or_infinite_are_quarantined_not_classes(workdir, tiny_model):
    """A JSONL head label [1, 2], {"a": 1} or Infinity became the classes "[1, 2]", "{'a': 1}" and "inf"."""
    rows = multitask_rows(30)
    records = rows.to_dict("records")
    records[0]["length"], records[1]["sentiment"], records[2]["length"] = [1, 2], {"a": 1}, float("inf")
    (workdir / "data/raw").mkdir(parents=True)
    (workdir / "data/raw/tiny.jsonl").write_text("\n".join(json.dumps(record) for record in records))  # inf as Infinity
    params = multitask_params(tiny_model)
    params["data"] |= {"source": "data/raw/tiny.jsonl", "on_bad_rows": "skip"}
    run_stages("ingest", params=load(params))
    summary = json.loads((workdir / "reports/ingest.json").read_text())
    quarantine = pd.read_csv(workdir / "data/quarantine/ingest.csv")
    assert quarantine["source_row"].tolist() == [1, 2, 3]
    assert quarantine["problem"].tolist() == ["column 'length' holds a list; expected a text or a number",
                                              "column 'sentiment' holds a JSON object; expected a text or a number",
                                              "column 'length' holds an infinite number; expected a text or a number"]
    assert quarantine["content"].tolist() == ["[1, 2]", "{'a': 1}", "inf"]
    assert summary["rows_read"] == 30 and summary["rows_kept"] == 27
    assert set(summary["labels"]["length"]) == {"short", "long"} and set(summary["labels"]["sentiment"]) == {"negative", "neutral", "positive"}


def test_predict_and_serve_give_every_head_its_label_and_probabilities(multitask_project, tmp_path):
    from finetune import inference
    from tests.support.predicting import evaluated, served

    root = multitask_project
    predictor = inference.load(root / "models/model")
    table = predictor.predict(root / "data/raw/tiny.csv").table
    heads = {"sentiment": ["negative", "neutral", "positive"], "length": ["long", "short"]}
    assert list(table.columns) == ["row", "input", *(c for head, classes in heads.items() for c in [head, *(f"{head}.prob_{n}" for n in classes)])]
    prepared = pd.read_parquet(root / paths.PREPARED / "test.parquet").assign(row=lambda t: t["origin"].str.removeprefix("row ").astype(int))
    for head in heads:
        saved = evaluated(root, head)  # only the test rows that have this head's label
        rows = prepared.set_index("id").loc[saved.index, "row"]
        ours = table.set_index("row").loc[rows].filter(like=f"{head}.prob_").to_numpy()
        assert abs(ours - saved.to_numpy()).max() < 1e-4
    answer = served(predictor, [{"text": table["input"][0]}])["predictions"][0]
    assert (answer["sentiment"], answer["length"]) == (table["sentiment"][0], table["length"][0])
    ensembled = inference.load(root / "models/ensemble").predict(root / "data/raw/tiny.csv").table.set_index("row")
    for head in heads:  # each head's ensemble (primary + that head's TF-IDF) gives its stage's test predictions back
        staged = pd.read_csv(root / "reports/ensemble" / head / "predictions.csv")
        rows = prepared.set_index("id").loc[staged["id"], "row"]
        assert (ensembled.loc[rows, head].to_numpy() == staged["predicted"].astype(str).to_numpy()).all()
        assert abs(ensembled.loc[rows].filter(like=f"{head}.prob_").to_numpy() - staged.filter(like="prob_").to_numpy()).max() < 1e-4
