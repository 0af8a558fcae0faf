"""Bayesian (TPE) vs random search at an equal number of trials, through the real search code
(finetune/search.py: Optuna study, median pruner, every trial a real fine-tune of the default model).

To keep it to minutes on a CPU, it searches on a subsample of the default prepared data (TRAIN_ROWS
train rows, the full val split) with one epoch per trial, in a scratch copy (its own .cache/search and
reports/search), over a deliberately wide space. Same seed, same trials, same machine, one after the other.

    python bench/search.py [trials]      # default 8 per method
"""
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from finetune import search  # noqa: E402
from finetune.config.params import load_params  # noqa: E402

TRAIN_ROWS = 800
TRIALS = int(sys.argv[1]) if len(sys.argv) > 1 else 8
SPACE = {"train.learning_rate": {"log_uniform": [1e-6, 1e-3]}, "train.warmup_ratio": {"uniform": [0.0, 0.3]},
         "train.layer_lr_decay": {"uniform": [0.5, 1.0]}}

base = load_params(ROOT / "params.yaml")
rows = []
with tempfile.TemporaryDirectory() as scratch:
    prepared = Path(scratch) / "data/prepared"
    prepared.mkdir(parents=True)
    shutil.copy(ROOT / "data/prepared/label_map.json", prepared)
    train = pd.read_parquet(ROOT / "data/prepared/train.parquet")
    train[~train["augmented"]].sample(TRAIN_ROWS, random_state=0).to_parquet(prepared / "train.parquet")
    shutil.copy(ROOT / "data/prepared/val.parquet", prepared)
    os.chdir(scratch)
    for method in ("random", "bayesian"):
        raw = base.model_dump()
        raw["train"].update(epochs=1, eval_steps=5, early_stopping={"metric": "f1_macro", "patience": 0})
        raw["search"] = {"method": method, "trials": TRIALS, "metric": "f1_macro", "seed": 0, "concurrency": 1,
                         "study": method, "pruner": {"enabled": True, "startup_trials": 2, "warmup_evaluations": 2}, "space": SPACE}
        params = type(base).model_validate(raw)
        start = time.perf_counter()
        study = search.run_search(params, lambda number: search.run_trial(params, number))
        seconds = time.perf_counter() - start
        values = [t.value for t in study.trials if t.state.name == "COMPLETE"]
        best_so_far = pd.Series([t.value if t.state.name == "COMPLETE" else float("nan") for t in study.trials]).cummax().round(4).tolist()
        rows.append({"method": method, "trials": TRIALS, "complete": len(values), "pruned": sum(t.state.name == "PRUNED" for t in study.trials),
                     "best_val_f1": round(max(values), 4), "median_val_f1": round(float(pd.Series(values).median()), 4),
                     "best_so_far": best_so_far, "best_params": study.best_params, "seconds": round(seconds, 1)})
        print(json.dumps(rows[-1]), flush=True)

print(f"\n{TRAIN_ROWS} train rows, 1 epoch per trial, {TRIALS} trials per method")
print("| method | complete | pruned | best val F1 | median val F1 (complete) | best so far, per trial | time (s) |\n|---|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r['method']} | {r['complete']} | {r['pruned']} | {r['best_val_f1']} | {r['median_val_f1']} | {r['best_so_far']} | {r['seconds']} |")
