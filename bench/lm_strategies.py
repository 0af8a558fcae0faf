"""Causal LM: LoRA (the default) vs a full fine-tune of the same model on the same blocks, side by side in one run.

    python bench/lm_strategies.py [--train-blocks 256] [--keep DIR]

Runs the real pipeline (`dvc repro ensemble`) in a scratch copy of this commit with configs/lm.yaml: the primary model
is the default recipe (LoRA rank 16, learning rate 2e-3), and the one ensemble member is `full` (every weight trained,
learning rate 5e-5, the usual full fine-tuning rate; same seed, blocks, epochs and batch). Prints each one's val and
test perplexity with its interval, the pretrained model's, training time and trainable parameters, and the mixture.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import scratch  # bench/scratch.py (this script's folder is on sys.path)
import yaml

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-blocks", type=int, default=256, help="preprocess.max_blocks.train")
    parser.add_argument("--keep", type=Path, help="run in this folder and keep it (default: a temporary one, removed)")
    args = parser.parse_args()
    params = yaml.safe_load((ROOT / "configs/lm.yaml").read_text())
    params["preprocess"]["max_blocks"]["train"] = args.train_blocks
    params["ensemble"]["members"] = {"full": {"kind": "finetune", "train": {"strategy": "full", "learning_rate": 5e-5}}}
    work = scratch.project(params, args.keep, "lm-strategies-")
    if (ROOT / ".cache/builtin").is_dir():  # the converted builtin model: no second conversion
        shutil.copytree(ROOT / ".cache/builtin", work / ".cache/builtin", ignore=shutil.ignore_patterns("*.lock"))
    scratch.repro(work, "ensemble")

    metrics = json.loads((work / "reports/metrics.json").read_text())
    ensemble = json.loads((work / "reports/ensemble.json").read_text())
    runs = {"lora (primary)": json.loads((work / "reports/train.json").read_text()),
            "full": json.loads((work / "reports/member_summaries/full.json").read_text())}
    base = metrics["baseline"]
    print(f"pretrained: test perplexity {base['perplexity']:.2f} [{base['ci95']['perplexity']['low']:.2f}, {base['ci95']['perplexity']['high']:.2f}]")
    for (label, run), name in zip(runs.items(), ("primary", "full")):
        scores = ensemble["members"][name]
        ci = scores["ci95"]["perplexity"]
        change = scores["test"]["perplexity"] / base["perplexity"] - 1
        versus = ensemble["vs_members"][name]["perplexity"]
        print(f"{label:15s} val perplexity {scores['val']['perplexity']:.2f}, test {scores['test']['perplexity']:.2f} [{ci['low']:.2f}, {ci['high']:.2f}] "
              f"({100 * change:+.1f} % vs pretrained); train {run['train_runtime_s']} s, {run['steps']} steps, "
              f"{run['parameters']['trainable']:,} trainable ({100 * run['parameters']['trainable_share']:.2f} %); mixture vs it: {versus['verdict']}")
    test = ensemble["test"]
    print(f"mixture ({ensemble['method']}, weights {ensemble['weights']}): test perplexity {test['perplexity']:.2f}")
    if not args.keep:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
