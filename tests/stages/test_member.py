"""Ensemble members: a fine-tune with its own overrides and the TF-IDF model, on the tiny project."""
import json

import numpy as np
import pandas as pd
import pytest
from transformers import AutoModelForSequenceClassification

from finetune import paths
from finetune.errors import UserError
from finetune.families.classification import probabilities
from finetune.tasks import get_task
from stages import member
from tests.support.params import load, tiny_params


def _params(tiny_model, members):
    raw = tiny_params(tiny_model)
    raw["ensemble"]["members"] = members
    return load(raw)


def test_a_finetune_member_trains_with_its_overrides_and_saves_val_and_test_probabilities(trained_workdir, tiny_model):
    params = _params(tiny_model, {"short": {"train": {"seed": 5, "epochs": 2}, "preprocess": {"max_length": 8, "long_texts": "truncate"}}})
    summary = member.run(params, "short")

    args = json.loads((paths.MEMBER_MODELS / "short/training_args.json").read_text())
    assert args["seed"] == 5 and args["num_train_epochs"] == 2
    assert summary["steps"] == 2 * int(np.ceil(90 / 8))  # 90 train rows, batch 8, 2 epochs
    assert summary["splits"]["train"]["truncated_rows"] > 0  # max_length 8 truncates; the primary (32) truncated none
    assert json.loads(paths.PREPROCESS_SUMMARY.read_text())["splits"]["train"]["truncated_rows"] == 0
    AutoModelForSequenceClassification.from_pretrained(paths.MEMBER_MODELS / "short", use_safetensors=True)

    saved = probabilities.load(paths.MEMBER_REPORTS / "short/probabilities.parquet", "short")
    for split in ("val", "test"):
        prepared = pd.read_parquet(paths.PREPARED / f"{split}.parquet")
        assert saved.splits[split].ids.tolist() == prepared["id"].tolist()  # the prepared row order, not length-grouped
        assert saved.splits[split].labels.tolist() == prepared["label"].tolist()
    assert saved.classes == ["negative", "neutral", "positive"]
    assert summary["test"]["accuracy"] == pytest.approx((saved.splits["test"].probs.argmax(1) == saved.splits["test"].labels).mean())


def test_the_tfidf_member_learns_the_keywords_and_reloads_safely_from_disk(trained_workdir, tiny_model):
    params = _params(tiny_model, {"tfidf": {"kind": "tfidf", "tfidf": {"word_ngrams": [1, 1], "char_ngrams": None}}})
    summary = member.run(params, "tfidf")
    assert summary["test"]["accuracy"] >= 0.9  # one keyword per text carries the label
    saved = probabilities.load(paths.MEMBER_REPORTS / "tfidf/probabilities.parquet", "tfidf")
    model = get_task(params.task).classical.load(paths.MEMBER_MODELS / "tfidf")
    test = pd.read_parquet(paths.PREPARED / "test.parquet")
    assert np.allclose(model.predict_proba(test), saved.splits["test"].probs)
    assert summary["features"] == len(model.union.get_feature_names_out()) < 40  # unigrams only: the tiny vocabulary


def test_an_unknown_member_name_is_refused(trained_workdir, tiny_model):
    with pytest.raises(UserError, match=r"no member 'sed1' in ensemble.members \(members: \['seed1', 'tfidf'\]\)"):
        member.run(load(tiny_params(tiny_model)), "sed1")
