"""Keyword spotting: the recorded model beside the same recipe trained with preprocess.augment's speed change and
synthetic room on, each scored on the test split by synthesiser (espeak-ng's unheard voices, piper's neural voice) and
on the real spoken digits of bench/audio_real.py. Run in the clone of an audio record (after `dvc repro`):

    python bench/audio_augment.py [--variants speed=0.5,reverb=0.3 speed=0.8,reverb=0.5]
"""
import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from finetune import paths  # noqa: E402
from finetune.config.params import load_params  # noqa: E402
from finetune.io import read_json  # noqa: E402
from finetune.tasks import get_task  # noqa: E402
from finetune.training.fit import fit  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--variants", nargs="*", default=["speed=0.5,reverb=0.3", "speed=0.8,reverb=0.5"],
                    help="AudioAugment fields changed from the config's, key=value joined by commas")
args = parser.parse_args()

params = load_params()
task = get_task(params.task)
label_map = read_json(paths.LABEL_MAP)
splits = {name: pd.read_parquet(paths.PREPARED / f"{name}.parquet") for name in ("train", "val", "test")}
neural = splits["test"]["origin"].str.contains("piper").to_numpy()


def score(folder: Path, name: str, extra: dict) -> None:
    model = task.models.load_trained(str(folder), False)
    probs = task.predict_proba(model, task.models.load_processor(str(folder), False), splits["test"], label_map, 64)
    right = probs.argmax(axis=1) == splits["test"]["label"].to_numpy()
    real = subprocess.run([sys.executable, str(Path(__file__).with_name("audio_real.py")), str(folder)], capture_output=True, text=True, check=True)
    print(json.dumps({"model": name, **extra, "espeak_test": f"{right[~neural].sum()}/{(~neural).sum()}",
                      "piper_test": f"{right[neural].sum()}/{neural.sum()}", "real_digits": real.stdout.strip().splitlines()[-1]}), flush=True)


score(paths.MODEL, "the recorded model", {})
for variant in args.variants:
    changes = {key: float(value) for key, value in (pair.split("=") for pair in variant.split(","))}
    augment = params.preprocess.augment.model_copy(update=changes)
    run = params.model_copy(update={"preprocess": params.preprocess.model_copy(update={"augment": augment})})
    with tempfile.TemporaryDirectory() as tmp:
        summary = fit(task, run, splits, label_map, Path(tmp) / "model", Path(tmp) / "live", f"bench {variant}")
        score(Path(tmp) / "model", variant, {"train_s": summary["train_runtime_s"]})
