"""A hyper-parameter search over a causal LM's keys, selecting on val loss (perplexity = exp(loss))."""
from pathlib import Path

import pandas as pd

from finetune import search
from finetune.io import read_json
from tests.support.data import write_lm_corpus
from tests.support.params import load, run_stages, tiny_lm_params


def test_trials_train_real_lms_and_the_lowest_val_loss_wins(workdir, tiny_causal_lm):
    write_lm_corpus(Path.cwd())
    raw = tiny_lm_params(tiny_causal_lm, train={"epochs": 2}, search={"method": "grid", "pruner": {"enabled": False}})
    raw["search"]["space"] = {"train.learning_rate": {"choice": [1e-6, 1e-2]}}
    params = load(raw)
    assert params.search.direction == "minimize"
    run_stages("ingest", "preprocess", params=params)
    search.run_search(params, lambda number: search.run_trial(params, number), log=lambda _: None)
    trials = pd.read_csv("reports/search/trials.csv")
    assert len(trials) == 2 and set(trials["state"]) == {"complete"}
    best = read_json("reports/search/summary.json")["best"]
    assert best["value"] == trials["value"].min() and best["params"] == {"train.learning_rate": 1e-2}  # 1e-6 learns nothing in 2 epochs
