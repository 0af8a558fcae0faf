import json

import pandas as pd
import pytest

from finetune.errors import UserError
from stages import ingest, preprocess
from tests.support.data import make_rows
from tests.support.params import load, tiny_params


def _prepare(workdir, tiny_model, rows: pd.DataFrame, **sections):
    (workdir / "data/raw").mkdir(parents=True, exist_ok=True)
    rows.to_csv(workdir / "data/raw/tiny.csv", index=False, quoting=1)  # quote texts holding a bare \r
    params = load(tiny_params(tiny_model, **sections))
    ingest.run(params)
    return preprocess.run(params)


def _splits():
    return {name: pd.read_parquet(f"data/prepared/{name}.parquet") for name in ("train", "val", "test")}


def test_cleaning_drops_empty_duplicate_and_conflicting_texts(workdir, tiny_model):
    rows = pd.concat([make_rows(60), pd.DataFrame({
        "text": ["", "   ", "The  flight\r was GOOD", "the flight was good", "same words", "same  words"],
        "label": ["negative", "positive", "positive", "positive", "negative", "positive"],
    })])
    summary = _prepare(workdir, tiny_model, rows)
    assert summary["dropped"] == {"empty text": 2, "duplicate text": 1, "same text with different labels": 2}
    quarantine = pd.read_csv("data/quarantine/preprocess.csv")
    assert sorted(quarantine["problem"]) == ["duplicate text", "empty text", "empty text",
                                             "same text with different labels", "same text with different labels"]
    texts = pd.concat(_splits().values())["input"].tolist()
    assert "The flight was GOOD" in texts  # whitespace normalised (bare \r too), first copy kept
    assert "the flight was good" not in texts


def test_scraped_text_is_cleaned_before_duplicates_are_found(workdir, tiny_model):
    rows = pd.concat([make_rows(60), pd.DataFrame({
        "text": ["fish &amp; chips &lt;3", "fish & chips <3", "&#39;quoted&#39; &amp;amp; more", "@bob see https://x.co/a?b=1 or me@home"],
        "label": ["positive", "positive", "negative", "neutral"],
    })])
    summary = _prepare(workdir, tiny_model, rows, preprocess={"clean": {"urls": "placeholder", "mentions": "placeholder"}})
    assert summary["dropped"] == {"duplicate text": 1}  # the decoded entity made the first two the same text
    assert summary["inputs_changed_by_normalization"] == 3
    texts = pd.concat(_splits().values())["input"].tolist()
    assert "fish & chips <3" in texts and "'quoted' &amp; more" in texts  # decoded once: a double-escaped entity stays escaped
    assert "@user see http or me@home" in texts


def test_cleaning_can_keep_entities_and_is_not_a_member_override(workdir, tiny_model):
    rows = pd.concat([make_rows(60), pd.DataFrame({"text": ["fish &amp; chips"], "label": ["positive"]})])
    _prepare(workdir, tiny_model, rows, preprocess={"clean": {"html_entities": False}})
    assert "fish &amp; chips" in pd.concat(_splits().values())["input"].tolist()
    raw = tiny_params(tiny_model)
    raw["ensemble"]["members"] = {"raw": {"kind": "finetune", "preprocess": {"clean": {"html_entities": False}}}}
    with pytest.raises(UserError, match=r"ensemble.members.raw.preprocess.clean: preprocess.clean applies once"):
        load(raw)


def test_splits_are_stratified_seeded_and_disjoint(workdir, tiny_model):
    summary = _prepare(workdir, tiny_model, make_rows(150))
    parts = _splits()
    assert [len(p) for p in parts.values()] == [90, 30, 30]
    for part in parts.values():
        assert part["label"].value_counts().tolist() == [len(part) // 3] * 3
    keys = [set(p["input"].str.casefold()) for p in parts.values()]
    assert not (keys[0] & keys[1]) and not (keys[0] & keys[2]) and not (keys[1] & keys[2])
    label_map = json.loads(open("data/prepared/label_map.json").read())
    assert label_map["labels"] == ["negative", "neutral", "positive"] == summary["labels"]
    first_ids = parts["test"]["id"].tolist()
    _prepare(workdir, tiny_model, make_rows(150))
    assert _splits()["test"]["id"].tolist() == first_ids


def test_integer_labels_keep_numeric_order(workdir, tiny_model):
    rows = make_rows(60)
    rows["label"] = rows["label"].map({"negative": 10, "neutral": 2, "positive": 1})
    assert _prepare(workdir, tiny_model, rows)["labels"] == ["1", "2", "10"]


def test_user_split_column_drops_leaked_eval_rows(workdir, tiny_model):
    rows = make_rows(60)
    rows["split"] = ["train"] * 40 + ["val"] * 10 + ["test"] * 10
    leaked = rows.iloc[[0]].assign(split="test", text=rows["text"][0].upper())
    summary = _prepare(workdir, tiny_model, pd.concat([rows, leaked]), data={"split_column": "split"})
    assert summary["dropped"] == {"leakage: same text is in train": 1}
    assert [s["rows"] for s in summary["splits"].values()] == [40, 10, 10]


def test_label_missing_from_train_is_an_error(workdir, tiny_model):
    rows = make_rows(30, labels=("negative", "positive"))
    rows["split"] = ["train"] * 20 + ["val"] * 5 + ["test"] * 5
    rows.loc[29, "label"] = "neutral"
    with pytest.raises(UserError, match=r"label\(s\) \['neutral'\] appear in the test split but never in train"):
        _prepare(workdir, tiny_model, rows, data={"split_column": "split"})
    assert not (workdir / "data/prepared").exists()


def test_fewer_than_two_classes_is_an_error(workdir, tiny_model):
    with pytest.raises(UserError, match=r"the train split has 1 label\(s\) \(\['negative'\]\)"):
        _prepare(workdir, tiny_model, make_rows(30, labels=("negative",)))


def test_tiny_class_cannot_be_split(workdir, tiny_model):
    rows = pd.concat([make_rows(30, labels=("negative", "positive")), pd.DataFrame({"text": ["odd one"], "label": ["rare"]})])
    with pytest.raises(UserError, match=r"\{'rare': 1\} have fewer than 3 rows"):
        _prepare(workdir, tiny_model, rows)


def test_augmentation_touches_train_only_and_is_seeded(workdir, tiny_model):
    augment = {"augment": {"copies": 2, "prob": 0.3, "seed": 5}}
    summary = _prepare(workdir, tiny_model, make_rows(60), preprocess=augment)
    parts = _splits()
    assert summary["splits"]["train"] == {**summary["splits"]["train"], "rows": 36 * 3, "augmented_rows": 72}
    assert not parts["val"]["augmented"].any() and not parts["test"]["augmented"].any()
    copies = parts["train"][parts["train"]["augmented"]]
    assert (copies["input"] != parts["train"][~parts["train"]["augmented"]]["input"].tolist() * 2).any()
    _prepare(workdir, tiny_model, make_rows(60), preprocess=augment)
    assert _splits()["train"]["input"].tolist() == parts["train"]["input"].tolist()


def test_padding_and_truncation(workdir, tiny_model):
    rows = make_rows(30)
    rows.loc[0, "text"] = " ".join(["very"] * 50) + " good"
    summary = _prepare(workdir, tiny_model, rows, preprocess={"max_length": 16, "padding": "max_length"})
    lengths = pd.concat(_splits().values())["input_ids"].map(len)
    assert set(lengths) == {16}
    assert sum(s["truncated_rows"] for s in summary["splits"].values()) == 1
    _prepare(workdir, tiny_model, rows, preprocess={"max_length": 16, "padding": "dynamic"})
    lengths = pd.concat(_splits().values())["input_ids"].map(len)
    assert lengths.max() == 16 and lengths.min() < 16


def test_the_profile_measures_token_lengths_and_suggests_for_long_texts_and_imbalance(workdir, tiny_model):
    from transformers import AutoTokenizer

    rows = make_rows(330)
    rows = pd.concat([rows[rows["label"] != "positive"], rows[rows["label"] == "positive"].head(20)])  # 110:110:20, 5.5x apart
    summary = _prepare(workdir, tiny_model, rows, preprocess={"max_length": 8, "long_texts": "truncate"})
    found = summary["profile"]
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model))
    train = _splits()["train"]
    lengths = [len(ids) for ids in tokenizer(train["input"].tolist())["input_ids"]]
    assert found["inputs"]["tokens"]["train"]["max"] == max(lengths) and found["inputs"]["tokens"]["train"]["min"] == min(lengths)
    longer = sum(n > 8 for n in lengths) / len(lengths)
    assert found["inputs"]["longer_than_max_length"]["train"] == round(longer, 4) > 0.1
    assert found["rows"] == {name: s["rows"] for name, s in summary["splits"].items()}
    assert found["classes"]["largest_to_smallest"] == 5.5 and found["classes"]["smallest"] == ["positive", 12]
    assert {"setting": "preprocess.max_length", "value": 8, "why": "set in params.yaml"} in found["chosen"]
    assert {"setting": "preprocess.long_texts", "value": "truncate", "why": "set in params.yaml"} in found["chosen"]
    long, imbalance, *near = found["notes"]  # (the filler-word texts are near duplicates of each other too)
    assert long.startswith(f"{100 * longer:.1f} % of the train texts are longer than max_length 8") and "preprocess.long_texts: auto or chunks" in long
    assert "5.5x the rows of the smallest (positive, 12)" in imbalance and "train.loss: weighted_cross_entropy" in imbalance
    assert found["near_duplicates"]["compared"] == found["rows"]

    quiet = _prepare(workdir, tiny_model, rows, preprocess={"max_length": "auto"}, train={"loss": "weighted_cross_entropy"})["profile"]
    assert quiet["notes"] == near  # auto fits the lengths; the loss already weighs the small class
    assert quiet["chosen"][0]["why"].startswith("auto: the train texts' 99th percentile")
    long_texts = quiet["chosen"][1]
    assert long_texts["setting"] == "preprocess.long_texts" and long_texts["value"] == "truncate"
    assert long_texts["why"].startswith("auto: ") and long_texts["why"].endswith(f"than max_length {quiet['chosen'][0]['value']} (not more than 10 %)")
    windows = _prepare(workdir, tiny_model, rows, preprocess={"max_length": 8})["profile"]  # long_texts auto, most texts longer
    assert windows["chosen"][1]["value"] == "chunks" and not any("lose their end" in note for note in windows["notes"])
