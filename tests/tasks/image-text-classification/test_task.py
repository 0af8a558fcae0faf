"""The image + text task (finetune/tasks/image-text-classification/, finetune/tasks/image-text-classification/fusion.py) on tiny encoders built at test
time (a 2-stage Hugging Face ResNet and a 2-layer BERT): easy-VQA's splits, examples stored and checked, fusion variants
that train and reload, per-encoder strategies, unimodal baselines, and bad input refused with the key or file named."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from finetune.config.params import parse_params
from finetune.errors import UserError
from finetune.tasks import get_task
from finetune.training.strategies import apply_strategy, describe
from tests.support.data import write_vqa_table
from tests.support.params import image_text_params, merge, place, run_stages

TASK = get_task("image-text-classification")
@pytest.fixture
def project(workdir, tiny_image_model, tiny_model):
    write_vqa_table(workdir)
    return workdir, image_text_params(str(tiny_image_model), str(tiny_model))


def parsed(params: dict, root):
    return parse_params(place(params, root))


def prepared(root, params):
    params = parsed(params, root)
    run_stages("ingest", "preprocess", params=params)
    return params


def test_easy_vqa_val_holds_whole_train_images_out_and_test_is_the_packages_own():
    params = parse_params({"task": "image-text-classification"})
    frame = TASK.read(params.data).frame
    assert len(frame) == 38_575 + 9_673
    assert frame["split"].value_counts()["test"] == 9_673
    image = frame["origin"].str.extract(r"\((\w+ image \d+)\)")[0]
    assert not set(image[frame["split"] == "val"]) & set(image[frame["split"] == "train"])  # no val image is seen in training
    assert 0.08 < (frame["split"] == "val").mean() / (frame["split"] != "test").mean() < 0.14  # about 1/9 of the train questions
    first = frame.iloc[0]
    assert first["input"]["text"] == "what is the blue shape?" and first["input"]["image"][:4] == b"\x89PNG" and first["label"] == "rectangle"


def test_examples_are_stored_checked_and_featurized(project):
    root, params = project
    params = prepared(root, params)
    train = pd.read_parquet(root / "data/prepared/train.parquet")
    assert {"pixels", "input_ids", "attention_mask"} <= set(train.columns)
    example = train.iloc[0]["input"]
    assert set(example) == {"image", "text"} and example["text"].startswith(("is there", "does the image"))
    assert len(train.iloc[0]["pixels"]) == 16 * 16 * 3
    html = TASK.render(example)
    assert html.startswith("<img") and example["text"] in html  # the report shows the thumbnail and the text


def test_a_missing_image_is_a_bad_row_naming_the_file(project):
    root, params = project
    table = root / "data/raw/vqa/pairs.csv"
    rows = pd.read_csv(table)
    rows.loc[3, "image"] = "images/missing.png"
    rows.to_csv(table, index=False)
    with pytest.raises(UserError, match=r"row 4 .*file not found: .*images/missing.png"):
        run_stages("ingest", params=parsed(params, root))
    merge(params, {"data": {"on_bad_rows": "skip"}})
    run_stages("ingest", params=parsed(params, root))
    quarantined = pd.read_csv(root / "data/quarantine/ingest.csv")
    assert quarantined["problem"].str.contains("file not found").tolist() == [True]


@pytest.mark.parametrize("fusion, text_strategy", [("concat", "full"), ("gated", "lora")])
def test_each_fusion_trains_and_reloads_with_identical_predictions(project, fusion, text_strategy):
    root, params = project
    merge(params, {"train": {"fusion": fusion, "epochs": 1, "encoders": {"text": {"strategy": text_strategy}}}})
    params = prepared(root, params)
    run_stages("train", params=params)
    model = TASK.models.load_trained("models/model", False)
    assert type(model).__name__ == "ImageTextClassifier" and model.gated == (fusion == "gated")
    test = pd.read_parquet("data/prepared/test.parquet")
    layout = json.loads((root / "data/prepared/label_map.json").read_text())
    processor = TASK.models.load_processor("models/model", False)
    first = TASK.predict_proba(model, processor, test, layout, 4)
    again = TASK.predict_proba(TASK.models.load_trained("models/model", False), processor, test, layout, 7)
    assert first.shape == (len(test), 2) and abs(first - again).max() < 1e-5
    assert not any("lora_" in name for name in model.state_dict())  # adapters merged into the saved text encoder


def test_per_encoder_strategies_freeze_what_they_say(project, tiny_image_model, tiny_model):
    root, raw = project
    merge(raw, {"train": {"encoders": {"image": {"strategy": "frozen"}, "text": {"strategy": "lora"}}}})
    params = parsed(raw, root)
    layout = {"labels": ["no", "yes"], "pixels": {"height": 16, "width": 16, "channels": 3}}
    model = apply_strategy(TASK.models.load_model(TASK.models.source(params.train.model), layout, params.train), params.train)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert not any(name.startswith("image_encoder.") for name in trainable)
    text = {name for name in trainable if name.startswith("text_encoder.")}
    assert text and all("lora_" in name or ".pooler." in name for name in text)  # adapters (and the pooler, LoRA's head)
    assert {"head.1.weight", "project.image.weight", "project.text.weight", "gate.weight"} <= trainable
    groups = {group["group"]: group for group in describe(model, params.train)["groups"]}
    assert groups["image_encoder"]["trainable"] == 0 and groups["head"]["trainable"] == groups["head"]["parameters"]
    # a training step moves the fusion but not the frozen encoder, whose BatchNorm statistics stay put too
    before = {name: value.clone() for name, value in model.state_dict().items() if name.startswith("image_encoder.")}
    model.train()
    batch = {"pixel_values": torch.randn(4, 3, 16, 16), "input_ids": torch.randint(5, 50, (4, 6)),
             "attention_mask": torch.ones(4, 6, dtype=torch.long), "labels": torch.tensor([0, 1, 0, 1])}
    model(**batch).loss.backward()
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1).step()
    after = model.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)


def test_a_unimodal_member_has_one_encoder_and_the_pipeline_ends_with_the_ensemble(project):
    root, params = project
    merge(params, {"train": {"epochs": 2}})
    params = prepared(root, params)
    run_stages("train", "evaluate", params=params)
    import stages.ensemble
    import stages.member

    stages.member.run(params, "text_only")
    member = TASK.models.load_trained("models/members/text_only", False)
    assert member.image_encoder is None and member.text_encoder is not None and list(member.project) == ["text"]
    summary = stages.ensemble.run(params)
    assert {"primary", "text_only"} <= set(summary["members"])


@pytest.mark.parametrize("train, message", [
    ({"model": "models/pretrained/tiny-resnet"}, r"expected 'IMAGE MODEL \+ TEXT MODEL'"),
    ({"modalities": []}, r"train.modalities.*expected image, text or both"),
    ({"modalities": ["text", "text"]}, r"expected image, text or both, each once"),
    ({"strategy": "lora"}, r"sets a strategy per encoder in train.encoders"),
    ({"encoders": {"text": {"strategy": "linear_probe"}}}, r"train.encoders.text.strategy"),
    ({"layer_lr_decay": 0.8}, r"one learning rate"),
])
def test_bad_settings_are_refused_naming_the_key(project, train, message):
    root, params = project
    params = place(params, root)
    if "model" in train:
        params["train"]["model"] = train.pop("model")
    merge(params, {"train": train})
    with pytest.raises(UserError, match=message):
        parse_params(params)


def test_an_image_model_without_a_linear_head_cannot_say_its_feature_size():
    from finetune.models.images import as_encoder

    with pytest.raises(UserError, match="size of its image features cannot be read"):
        as_encoder(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)))


def test_the_unknown_half_of_a_pair_is_named(project):
    root, params = project
    params = place(params, root)
    params["train"]["model"] = params["train"]["model"].split(" + ")[0] + " + builtin:nope"
    with pytest.raises(UserError, match=r"text model 'builtin:nope': unknown builtin model"):
        parse_params(params)


def test_the_outline_for_search_checks_is_the_module_tree_without_weights(project):
    root, raw = project
    params = parsed(raw, root)
    outline = TASK.models.outline(params.train)
    layout = {"labels": ["a", "b"], "pixels": {"height": 16, "width": 16, "channels": 3}}
    real = TASK.models.load_model(TASK.models.source(params.train.model), layout, params.train)
    assert all(p.device.type == "meta" for p in outline.parameters())
    assert {n: p.shape for n, p in outline.named_parameters()} == {n: p.shape for n, p in real.named_parameters()}


def test_two_label_columns_train_two_heads_on_the_fused_model(project):
    """Several heads through the image + text task (finetune/data/heads.py): the answer and the colour the question asks about,
    a few of each missing; both heads are scored on their own labelled rows."""
    root, params = project
    table = root / "data/raw/vqa/pairs.csv"
    rows = pd.read_csv(table)
    rows["asked"] = rows["text"].str.extract(r"(red|green|blue)")[0]
    rows.loc[rows.index % 9 == 4, "asked"] = None
    rows.loc[rows.index % 9 == 7, "label"] = None
    rows.to_csv(table, index=False)
    merge(params, {"data": {"label_columns": ["label", "asked"]}, "train": {"epochs": 2}})
    params = prepared(root, params)
    run_stages("train", "evaluate", params=params)
    result = json.loads((root / "reports/metrics.json").read_text())
    test = pd.read_parquet(root / "data/prepared/test.parquet")
    targets = pd.DataFrame(test["label"].tolist(), columns=["label", "asked"])
    for task in ("label", "asked"):
        predictions = pd.read_csv(root / "reports/evaluate" / task / "predictions.csv")
        assert len(predictions) == int((targets[task] != -100).sum()) == result["heads"][task]["test_rows"]
        assert result["heads"][task]["accuracy"] == pytest.approx(float((predictions["actual"] == predictions["predicted"]).mean()))
