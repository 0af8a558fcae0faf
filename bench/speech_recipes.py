"""Speech recognition's recipe, side by side in one process: the pretrained Whisper at its own 30 s window vs the
shortened window (WER and clips/s on the same test clips, no training), then fine-tunes that differ in one setting at a
time (learning rate, epochs, what is trained), each scored on the synthetic test clips (unheard voices) and on the real
recordings of evaluate.real_speech (per group: in-domain cards, general LibriVox English, a digit string).

Run in a clone whose params.yaml is configs/speech.yaml after `dvc repro preprocess`:

    python bench/speech_recipes.py [--recipes lr=1e-5 lr=5e-5 ...]   # a markdown table; rows in .cache/bench/speech_recipes.jsonl

A recipe is space-free `key=value` pairs joined by commas, keys of train (and window): `lr=5e-5,epochs=3,strategy=partial,freeze=4`
(freeze: train.freeze_layers; partial with freeze=4 keeps the whole encoder frozen: the decoder alone learns).
`aug=off|default` (preprocess.augment: none, or AudioAugment's defaults) and `aug.FIELD=V` (one of its fields, e.g.
aug.speed=0.5, aug.reverb=0.3, aug.shift=0); `rehearse=N` adds N clips of general English to train
(preprocess.rehearsal, synthesised here as preprocess would).
"""
import argparse
import importlib
import json
import sys
import tempfile
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from finetune import paths  # noqa: E402
from finetune.config.params import load_params  # noqa: E402
from finetune.data.audio import AudioAugment, padded_clips  # noqa: E402
from finetune.io import read_json  # noqa: E402
from finetune.tasks import get_task  # noqa: E402
from finetune.training.fit import fit  # noqa: E402

EVALUATE = importlib.import_module("finetune.tasks.speech-recognition.evaluate")
T = importlib.import_module("finetune.tasks.speech-recognition.transcribe")
PREPROCESS = importlib.import_module("finetune.tasks.speech-recognition.preprocess")
KEYS = {"lr": "learning_rate", "epochs": "epochs", "strategy": "strategy", "freeze": "freeze_layers", "batch": "batch_size", "seed": "seed"}
# window=N trains (and scores) at an N s window instead of preprocess.window_seconds: every prepared clip fits a longer one

parser = argparse.ArgumentParser()
parser.add_argument("--recipes", nargs="*", default=["lr=1e-5", "lr=3e-5", "lr=1e-4"])
parser.add_argument("--windows", type=int, nargs="*", default=[30], help="pretrained windows scored beside the trained one")
args = parser.parse_args()

params = load_params()
task = get_task(params.task)
label_map = read_json(paths.LABEL_MAP)
splits = {name: pd.read_parquet(paths.PREPARED / f"{name}.parquet") for name in ("train", "val", "test")}
source = task.models.source(params.train.model)
processor = task.models.load_processor(source, False)
references = splits["test"]["transcript"].tolist()
real = EVALUATE.real_recordings(params) if params.evaluate.real_speech else None
out = Path(".cache/bench/speech_recipes.jsonl")
out.parent.mkdir(parents=True, exist_ok=True)
rows = []


def scores(model, name: str, extra: dict) -> dict:
    clips = list(padded_clips(splits["test"]["samples"], T.window_of(model)))
    texts, seconds = T.transcribe(model, processor.tokenizer, clips, params.evaluate.batch_size, max_new_tokens=params.evaluate.max_new_tokens)
    table = T.counts(references, texts)
    row = {"model": name, **extra, "test_wer": T.rates(table)["wer"], "test_wer_ci": list(T.interval(table)["wer"].values()),
           "test_cer": T.rates(table)["cer"], "clips_per_s": round(len(clips) / seconds, 2)}
    if real is not None:
        heard, _ = T.transcribe(model, processor.tokenizer, list(real["samples"]), params.evaluate.batch_size, max_new_tokens=params.evaluate.max_new_tokens)
        counted = T.counts(real["transcript"].tolist(), heard)
        row["real_wer"] = T.rates(counted)["wer"]
        for group in real["group"].unique():
            row[f"{group}_wer"] = T.rates(counted[(real["group"] == group).to_numpy()])["wer"]
    print(json.dumps(row), flush=True)
    return row


for window in [params.preprocess.window_seconds, *args.windows]:
    model = EVALUATE.pretrained(task, params) if window == 30 else task.models.load_model(source, {**label_map, "audio": {**label_map["audio"], "window_seconds": window}}, params.train).eval()
    rows.append(scores(model, f"pretrained, {window} s window", {}))

for recipe in args.recipes:
    pairs = dict(pair.split("=") for pair in recipe.split(","))
    window = int(pairs.pop("window", params.preprocess.window_seconds))
    augment = params.preprocess.augment if pairs.get("aug", "") != "off" else None
    if pairs.pop("aug", None) == "default":
        augment = AudioAugment()
    fields = {key[4:]: pairs.pop(key) for key in [k for k in pairs if k.startswith("aug.")]}
    if fields:
        augment = AudioAugment.model_validate({**(augment or AudioAugment()).model_dump(), **fields})
    rehearse = int(pairs.pop("rehearse", 0))
    changes = {KEYS[key]: (value if key == "strategy" else float(value) if "." in value or "e" in value else int(value)) for key, value in pairs.items()}
    run = params.model_copy(update={"train": params.train.model_copy(update=changes),
                                    "preprocess": params.preprocess.model_copy(update={"augment": augment, "rehearsal": rehearse})})
    train = splits["train"]
    if rehearse:
        added = task.featurize({"train": PREPROCESS.rehearsal_clips(task, run)}, run)[0]["train"]
        splits = {**splits, "train": pd.concat([train, added], ignore_index=True)}
    layout = {**label_map, "audio": {**label_map["audio"], "window_seconds": window}}
    with tempfile.TemporaryDirectory() as tmp:
        summary = fit(task, run, splits, layout, Path(tmp) / "model", Path(tmp) / "live", f"bench {recipe}")
        model = task.models.load_trained(str(Path(tmp) / "model"), False).eval()
        rows.append(scores(model, f"fine-tuned {recipe}", {"train_s": summary["train_runtime_s"], "steps": summary["steps"],
                                                            "val_loss": round(summary["val"]["loss"], 4)}))
    splits = {**splits, "train": train}

frame = pd.DataFrame(rows)
with out.open("a") as f:
    for row in rows:
        f.write(json.dumps(row) + "\n")
print("| " + " | ".join(frame.columns) + " |\n|" + "---|" * len(frame.columns))
for values in frame.itertuples(index=False):
    print("| " + " | ".join("" if (not isinstance(v, list) and pd.isna(v)) else str(v) for v in values) + " |")
