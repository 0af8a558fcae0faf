"""The audio task's window (preprocess.window_seconds) against Whisper's own 30 s, side by side in one process: training
and inference time per clip at each window (the same measured steps: batch 16 forward + backward + AdamW, then batch-64
inference, median of several), and for the windows the clips fit, the full default recipe's test accuracy.

Run in a clone whose params.yaml is configs/audio.yaml after `dvc repro preprocess` (data/prepared from the 2 s default;
every clip is <= 2 s, so the same prepared rows serve every window):

    python bench/audio_window.py [--train 2 3] [--time 1 2 3 30]    # a markdown table; rows in .cache/bench/audio_window.jsonl
"""
import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from finetune import paths  # noqa: E402
from finetune.config.params import load_params  # noqa: E402
from finetune.io import read_json  # noqa: E402
from finetune.scoring import metrics  # noqa: E402
from finetune.tasks import get_task  # noqa: E402
from finetune.training.fit import fit  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--train", type=int, nargs="*", default=[2, 3], help="windows trained with the full recipe (accuracy)")
parser.add_argument("--time", type=int, nargs="*", default=[1, 2, 3, 30], help="windows timed on the same steps")
args = parser.parse_args()

params = load_params()
task = get_task(params.task)
label_map = read_json(paths.LABEL_MAP)
splits = {name: pd.read_parquet(paths.PREPARED / f"{name}.parquet") for name in ("train", "val", "test")}
source = task.models.source(params.train.model)
processor = task.models.load_processor(source, False)
out = Path(".cache/bench/audio_window.jsonl")
out.parent.mkdir(parents=True, exist_ok=True)
rows = {}


def layout(window: int) -> dict:
    return {**label_map, "audio": {**label_map["audio"], "window_seconds": window}}


def batch(window: int, size: int) -> dict:
    data = task.models.dataset(splits["train"].head(size), layout(window), processor)
    return task.models.collator(processor)([data[i] for i in range(len(data))])


for window in args.time:  # the same steps at every window
    model = task.models.load_model(source, layout(window), params.train)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    train_batch, infer_batch = batch(window, 16), batch(window, 64)
    infer_batch.pop("labels")
    train_times, infer_times = [], []
    for repeat in range(4):
        start = time.perf_counter()
        model.train()(**train_batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        train_times.append((time.perf_counter() - start) / 16)
        with torch.inference_mode():
            start = time.perf_counter()
            model.eval()(**infer_batch)
            infer_times.append((time.perf_counter() - start) / 64)
    rows[window] = {"window_s": window, "encoder_positions": model.config.max_source_positions,
                    "train_ms_per_clip": round(1000 * statistics.median(train_times[1:]), 1),
                    "infer_ms_per_clip": round(1000 * statistics.median(infer_times[1:]), 2)}
    print(json.dumps(rows[window]), flush=True)

for window in args.train:
    run = params.model_copy(update={"preprocess": params.preprocess.model_copy(update={"window_seconds": window})})
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        summary = fit(task, run, splits, layout(window), Path(tmp) / "model", Path(tmp) / "live", f"bench window {window}")
        model = task.models.load_trained(str(Path(tmp) / "model"), False)
        probs = task.predict_proba(model, task.models.load_processor(str(Path(tmp) / "model"), False), splits["test"], layout(window), 64)
    test = metrics.headline(splits["test"]["label"].to_numpy(), probs.argmax(axis=1))
    rows.setdefault(window, {"window_s": window}).update({"train_s": summary["train_runtime_s"], "val_acc": round(summary["val"]["accuracy"], 4),
                                                          "test_acc": round(test["accuracy"], 4), "test_f1": round(test["f1_macro"], 4)})
    print(json.dumps(rows[window]), flush=True)

frame = pd.DataFrame(list(rows.values()))
reference = rows.get(30, {}).get("train_ms_per_clip")
if reference:
    frame["train_speedup_vs_30s"] = (reference / frame["train_ms_per_clip"]).round(1)
    frame["infer_speedup_vs_30s"] = (rows[30]["infer_ms_per_clip"] / frame["infer_ms_per_clip"]).round(1)
with out.open("a") as f:
    for row in frame.to_dict("records"):
        f.write(json.dumps(row) + "\n")
print("| " + " | ".join(frame.columns) + " |\n|" + "---|" * len(frame.columns))
for values in frame.itertuples(index=False):
    print("| " + " | ".join("" if pd.isna(v) else str(v) for v in values) + " |")
