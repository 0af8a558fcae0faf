"""Each train.strategy on the default data (data/prepared from `dvc repro preprocess`), side by side:
val and test accuracy / macro-F1, trainable-parameter share, training time. Every run uses the
params.yaml recipe with only the strategy (and the learning rate it needs) changed, in this one
process, one after the other, so the times compare on the same machine state.

    python bench/strategies.py [strategy ...]      # prints a markdown table; rows also in .cache/bench/strategies.jsonl

A name ending in `_rows{N}` (e.g. `full_rows4800`) trains that recipe on a seeded, stratified N of the train split,
val and test unchanged: a learning curve on one test set (does more data pay more than a better recipe?).
"""
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from sklearn.model_selection import train_test_split

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from finetune import paths  # noqa: E402
from finetune.config.params import load_params  # noqa: E402
from finetune.config.sections import Adaptive  # noqa: E402
from finetune.io import read_json  # noqa: E402
from finetune.scoring import metrics, uncertainty  # noqa: E402
from finetune.tasks import get_task  # noqa: E402
from finetune.training.fit import fit  # noqa: E402

# Learning rates each strategy is usually run at: frozen encoders and adapters take 10-20x the full rate. The adaptive
# policies decide at each evaluation, so they evaluate every 25 steps (17 times on the default text data, not 3); the
# `_every75` rows evaluate a third as often (each evaluation of the image data's 2,000 val images costs ~8 s) and the
# `_0.01` row freezes a group only when its gradient norm moved less than 1 % (the default 10 % froze the whole CNN by
# step 200 of 747); the `_check75` rows decide every 75 steps from gradient norms alone and evaluate once per epoch; the
# `_max0.5` rows freeze at most the bottom half of the groups below the head (max_frozen)
FREEZE_CONVERGED = Adaptive(policy="freeze_converged")
RECIPES = {
    "full": {},
    "partial": {"freeze_layers": 3},
    "partial_4": {"strategy": "partial", "freeze_layers": 4},  # the image CNN's stem and blocks 0-3 frozen from the start
    **{f"partial_4_epochs{epochs}": {"strategy": "partial", "freeze_layers": 4, "epochs": epochs} for epochs in (4, 5)},
    **{f"full_epochs{epochs}": {"strategy": "full", "epochs": epochs} for epochs in (1, 2, 3, 4, 5)},
    "partial_4_seed7": {"strategy": "partial", "freeze_layers": 4, "seed": 7},
    "full_seed7": {"strategy": "full", "seed": 7},
    "linear_probe": {"learning_rate": 1e-3},
    "gradual_unfreeze": {"unfreeze_every": 0.5},
    "lora": {"learning_rate": 1e-3},
    "adaptive": {"eval_steps": 25},  # unfreeze_on_plateau
    "adaptive_every75": {"strategy": "adaptive", "eval_steps": 75},
    "adaptive_freeze_converged": {"strategy": "adaptive", "eval_steps": 25, "adaptive": FREEZE_CONVERGED},
    "adaptive_freeze_converged_every75": {"strategy": "adaptive", "eval_steps": 75, "adaptive": FREEZE_CONVERGED},
    "adaptive_freeze_converged_0.01_every75": {"strategy": "adaptive", "eval_steps": 75,
                                               "adaptive": Adaptive(policy="freeze_converged", threshold=0.01)},
    "adaptive_freeze_converged_check75": {"strategy": "adaptive", "adaptive": Adaptive(policy="freeze_converged", check_every=75)},
}
# any adaptive_freeze_converged_{threshold}_check{steps}[_max{share}], e.g. adaptive_freeze_converged_0.05_check75_max0.3
DECIDED_EVERY = re.compile(r"adaptive_freeze_converged_([0-9.]+)_check([0-9]+)(?:_max([0-9.]+))?")
TRAIN_ROWS = re.compile(r"(.+)_rows([0-9]+)")  # any recipe on fewer train rows, e.g. full_epochs3_rows4800


def recipe(name: str) -> dict:
    if rows := TRAIN_ROWS.fullmatch(name):
        return recipe(rows.group(1))
    if name in RECIPES:
        return RECIPES[name]
    threshold, every, share = DECIDED_EVERY.fullmatch(name).groups()
    return {"strategy": "adaptive", "adaptive": Adaptive(policy="freeze_converged", threshold=float(threshold), check_every=int(every),
                                                         max_frozen=float(share) if share else None)}


def with_train_rows(splits: dict[str, pd.DataFrame], name: str) -> dict[str, pd.DataFrame]:
    """The splits, the train one cut to a seeded, stratified N rows when the name ends in _rows{N}."""
    if not (rows := TRAIN_ROWS.fullmatch(name)):
        return splits
    train, _ = train_test_split(splits["train"], train_size=int(rows.group(2)), stratify=splits["train"]["label"], random_state=0)
    return splits | {"train": train}


params = load_params()
label_map = read_json(paths.LABEL_MAP)
splits = {name: pd.read_parquet(paths.PREPARED / f"{name}.parquet") for name in ("train", "val", "test")}
task = get_task(params.task)
rows = []
out = Path(".cache/bench/strategies.jsonl")
out.parent.mkdir(parents=True, exist_ok=True)
for name in sys.argv[1:] or RECIPES:
    strategy = name.rsplit("_rows", 1)[0] if TRAIN_ROWS.fullmatch(name) else name
    run = params.model_copy(update={"train": params.train.model_copy(update={"strategy": strategy} | recipe(name))})
    data = with_train_rows(splits, name)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        summary = fit(get_task(run.task), run, data, label_map, Path(tmp) / "model", Path(tmp) / "live", f"bench {name}")
        seconds = time.perf_counter() - start
        model = task.models.load_trained(str(Path(tmp) / "model"), False)
        probs = task.predict_proba(model, task.models.load_processor(str(Path(tmp) / "model"), False), splits["test"], label_map, 128)
    test = metrics.headline(splits["test"]["label"].to_numpy(), probs.argmax(axis=1))
    low_high = uncertainty.interval(splits["test"]["label"].to_numpy(), probs.argmax(axis=1))
    adaptive = summary["parameters"].get("adaptive")
    row = {"strategy": name, "learning_rate": run.train.learning_rate, **{k: v for k, v in recipe(name).items() if k not in ("adaptive", "strategy")},
           "changes": sum(bool(event["change"]) for event in adaptive["timeline"]) if adaptive else None,
           "trainable_%": round(100 * summary["parameters"]["trainable_share"], 2),
           "trainable_end_%": round(100 * summary["parameters"]["trainable_at_end"] / summary["parameters"]["parameters"], 2),
           "train_rows": len(data["train"]), "steps": summary["steps"],
           "val_acc": round(summary["val"]["accuracy"], 4), "val_f1": round(summary["val"]["f1_macro"], 4),
           "test_acc": round(test["accuracy"], 4), "test_f1": round(test["f1_macro"], 4),
           "test_acc_95": [low_high["accuracy"]["low"], low_high["accuracy"]["high"]],
           "train_s": summary["train_runtime_s"], "total_s": round(seconds, 1)}
    rows.append(row)
    with out.open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)

frame = pd.DataFrame(rows)
frame["time_vs_full"] = (frame["train_s"] / frame.loc[frame["strategy"] == "full", "train_s"].iloc[0]).round(2) if "full" in set(frame["strategy"]) else None
print("| " + " | ".join(frame.columns) + " |\n|" + "---|" * len(frame.columns))
for values in frame.itertuples(index=False):
    print("| " + " | ".join(str(v) for v in values) + " |")
