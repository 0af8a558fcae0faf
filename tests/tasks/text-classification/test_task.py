"""Long texts in the text task: max_length and long_texts auto, head + tail, and overlapping windows averaged per text
(and through every stage that scores a model: evaluate, compress's distillation and ONNX export, explain)."""
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from finetune.errors import UserError
from finetune.tasks import get_task
from tests.support import task_module
from tests.support.data import FILLER, make_rows
from tests.support.params import load, run_stages, tiny_params

TASK = get_task("text-classification")
tokens = task_module("text-classification", "tokens")


def _text(words: int, offset: int = 0) -> str:
    return " ".join(FILLER[(offset + i) % len(FILLER)] for i in range(words))


def _featurize(tiny_model, train_texts, test_texts=("the flight",), **preprocess):
    """The task's featurize on hand-made splits (in a scratch project: params name a data file that must exist)."""
    Path("data/raw").mkdir(parents=True, exist_ok=True)
    make_rows(3).to_csv("data/raw/tiny.csv", index=False)
    params = load(tiny_params(tiny_model, preprocess=preprocess))
    parts = {name: pd.DataFrame({"id": range(len(texts)), "input": list(texts), "label": "positive"})
             for name, texts in (("train", train_texts), ("val", ["the car"]), ("test", test_texts))}
    tables, layout = TASK.featurize(parts, params)
    return tables, layout, TASK.models.load_processor(str(tiny_model), False)


def test_auto_max_length_is_the_99th_percentile_of_train_lengths_capped_by_the_context_and_the_window(workdir, tiny_model, monkeypatch):
    # 10..108 words = 12..110 tokens with [CLS] and [SEP], and one of 302: the 99th percentile is 110 + 0.01 * 192 -> 112
    _, layout, _ = _featurize(tiny_model, [_text(n) for n in range(10, 109)] + [_text(300)], max_length="auto")
    assert layout["max_length"] == 112 and layout["long_texts"] == "truncate"  # 1 % of the texts longer: cut
    assert layout["facts"]["max_length_rule"].startswith("auto: the train texts' 99th percentile (112 tokens)")
    assert layout["facts"]["long_texts_rule"] == "auto: 1.0 % of the train texts are longer than max_length 112 (not more than 10 %)"
    _, layout, _ = _featurize(tiny_model, [_text(200)] * 3, max_length="auto")
    assert layout["max_length"] == 128 and "at most 128 (the model context)" in layout["facts"]["max_length_rule"]  # the tiny BERT's positions
    monkeypatch.setattr(tokens, "AUTO_WINDOW", 64)  # a model whose context is longer than the window auto reads
    _, layout, _ = _featurize(tiny_model, [_text(n) for n in range(10, 109)], max_length="auto")
    assert layout["max_length"] == 64 and "at most 64 (auto reads at most 64 tokens at once)" in layout["facts"]["max_length_rule"]
    with pytest.raises(UserError, match="preprocess.max_length 512 is above the model's context of 128 tokens"):
        _featurize(tiny_model, [_text(5)], max_length=512)


def test_auto_long_texts_reads_in_windows_only_when_over_a_tenth_of_train_texts_are_longer_and_never_overrides_a_set_value(workdir, tiny_model):
    texts = [_text(5)] * 9 + [_text(100)]  # one text in ten longer than 32 tokens: truncated
    tables, layout, _ = _featurize(tiny_model, texts, max_length=32)
    assert layout["long_texts"] == "truncate" and "windows" not in tables["train"]
    tables, layout, _ = _featurize(tiny_model, texts[1:], test_texts=[_text(100)], max_length=32)  # one in nine: windows
    assert layout["long_texts"] == "chunks" and len(tables["test"]["windows"][0]) > 1
    assert layout["facts"]["long_texts_rule"] == "auto: 11.1 % of the train texts are longer than max_length 32 (more than 10 %)"
    assert tables["test"]["windows"][0][1][1:16] == tables["test"]["windows"][0][0][-16:-1]  # stride auto: half of 30 (under 32)
    _, layout, _ = _featurize(tiny_model, [_text(100)] * 3, max_length=32, long_texts="truncate")
    assert layout["long_texts"] == "truncate" and layout["facts"]["long_texts_rule"] == "preprocess.long_texts"


def test_head_tail_keeps_the_first_quarter_and_the_end_of_a_long_text(workdir, tiny_model):
    long = _text(100)
    tables, layout, tokenizer = _featurize(tiny_model, [long, _text(5)], max_length=32, long_texts="head_tail")
    ids = tables["train"]["input_ids"][0]
    full = tokenizer(long)["input_ids"]
    assert len(ids) == 32 and tables["train"]["truncated"].tolist() == [True, False]
    assert ids[:8] == full[:8]  # [CLS] + the first 30 // 4 = 7 tokens
    assert ids[8:] == full[-24:]  # the last 23 tokens + [SEP]
    assert tables["train"]["input_ids"][1] == tokenizer(_text(5))["input_ids"]  # short texts untouched


def test_chunks_cover_every_token_and_predictions_average_the_windows_in_row_order(workdir, tiny_model):
    texts = [f"{_text(70)} {' '.join(['good'] * 30)}", _text(10, offset=3), _text(50, offset=7)]  # 100, 10 and 50 words
    tables, layout, tokenizer = _featurize(tiny_model, texts, test_texts=texts, max_length=32, long_texts="chunks", stride=8)
    windows = tables["test"]["windows"].tolist()
    assert [len(w) for w in windows] == [5, 1, 2]  # windows of 30 tokens advancing by 22: 100 tokens in 5, 10 in 1, 50 in 2
    content = [list(w[1:-1]) for w in windows[0]]
    assert [len(w) for w in content] == [30, 30, 30, 30, 12]
    assert all(a[-8:] == b[:8] for a, b in zip(content, content[1:]))  # consecutive windows share `stride` tokens
    assert content[0] + [t for w in content[1:] for t in w[8:]] == tokenizer(texts[0], add_special_tokens=False)["input_ids"]

    model = KeywordCounter([tokenizer.convert_tokens_to_ids(w) for w in ("bad", "okay", "good")])
    probs = TASK.predict_proba(model, tokenizer, tables["test"], layout, batch_size=4)
    each = [[torch.softmax(model(torch.tensor([list(w)])).logits, -1).numpy()[0] for w in row] for row in windows]
    assert probs.shape == (3, 3)
    assert np.allclose(probs, [np.mean(row, axis=0) for row in each], atol=1e-6)
    assert not np.allclose(probs[0], each[0][0], atol=0.1)  # the mean of 5 windows, not the first window alone


class KeywordCounter(torch.nn.Module):
    """A stand-in classifier whose logits count three keywords in its input, so windows of one text disagree."""

    def __init__(self, keywords: list[int]):
        super().__init__()
        self.keywords = keywords

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        return SimpleNamespace(logits=torch.stack([(input_ids == k).sum(dim=1).float() for k in self.keywords], dim=1))


def test_a_stride_as_long_as_the_window_or_a_bad_max_length_is_refused(workdir, tiny_model):
    for bad in (6, "longest", True):
        with pytest.raises(UserError, match=rf"preprocess.max_length: .*expected a number of tokens from 8 to 8192, or auto \(got {bad!r}\)"):
            load(tiny_params(tiny_model, preprocess={"max_length": bad}))
    with pytest.raises(UserError, match=r"preprocess.stride 30: windows of max_length 32 tokens \(2 of them special\) need a stride from 0 to 29"):
        _featurize(tiny_model, [_text(50)], max_length=32, long_texts="chunks", stride=30)


def test_chunked_texts_train_and_are_scored_one_row_per_text(workdir, tiny_model):
    (workdir / "data/raw").mkdir(parents=True, exist_ok=True)
    make_rows(90).to_csv(workdir / "data/raw/tiny.csv", index=False)
    params = load(tiny_params(tiny_model, preprocess={"max_length": 8, "long_texts": "chunks", "stride": 2}, train={"epochs": 4}))
    run_stages("ingest", "preprocess", "train", "evaluate", params=params)
    summary = json.loads(open("reports/preprocess.json").read())
    assert summary["features"]["long_texts"] == "chunks" and summary["features"]["max_length"] == 8
    assert summary["splits"]["test"]["windows"] > summary["splits"]["test"]["rows"]
    trained = json.loads(open("reports/train.json").read())
    assert trained["schedule"]["rows"] == summary["splits"]["train"]["windows"]  # planned on what the loader draws
    assert trained["steps"] == trained["schedule"]["steps"]
    predictions = pd.read_csv("reports/evaluate/predictions.csv")
    assert len(predictions) == summary["splits"]["test"]["rows"]
    assert np.allclose(predictions.filter(like="prob_").sum(axis=1), 1, atol=1e-5)

    # compress: the students learn each window's soft label; the ONNX copies are scored per text like the torch models
    params = load(tiny_params(tiny_model, preprocess={"max_length": 8, "long_texts": "chunks", "stride": 2}, train={"epochs": 4},
                              compress={"teacher": "primary", "methods": ["int8", "distill"], "export": ["onnx"], "distill": {"epochs": 1}}))
    run_stages("compress", "explain", params=params)
    compressed = json.loads(open("reports/compress.json").read())["models"]
    assert set(compressed) == {"teacher", "int8", "distill"}
    assert compressed["teacher"]["accuracy"] == pytest.approx(json.loads(open("reports/metrics.json").read())["accuracy"], abs=1e-4)
    assert compressed["distill"]["onnx_prediction_agreement"] > 0.9 and compressed["distill"]["onnx_max_abs_probability_difference"] < 1e-3
    explained = json.loads(open("reports/explain/attributions.json").read())["examples"]
    assert any(example["truncated"] for example in explained)
    assert all(len(example["tokens"]) == 8 if example["truncated"] else len(example["tokens"]) <= 8 for example in explained)  # 1st window
