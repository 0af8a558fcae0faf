"""Two heads vs one head each on the same images and the same budget (issue's bar): builtin:easy-vqa-shapes (easy-vqa's
64x64 images, `shape` and `colour` derived from their questions, some missing), builtin:efficientnet-lite0 fully
fine-tuned. Three runs of ingest -> preprocess -> train -> evaluate, each in its own scratch project with identical
train settings: shape alone, colour alone, and both heads at once (data.label_columns, masked loss, weights 1 each).
Prints each head's test accuracy (with its bootstrap interval) and each run's training time; the run with two heads should
be within 1 pt of each single-task model in less time than the two together.

    PYTHONPATH=. .venv/bin/python bench/heads.py [--epochs 4] [--weights uncertainty]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import scratch  # bench/scratch.py (this script's folder is on sys.path)
import yaml

ROOT = Path(__file__).resolve().parent.parent


def params(labels: dict, epochs: float, weights) -> dict:
    raw = yaml.safe_load((ROOT / "configs/image.yaml").read_text())
    raw["data"] |= {"source": "builtin:easy-vqa-shapes", "max_rows": None, **labels}
    # shapes can sit anywhere and colours are the point: no crop, no flip, no colour jitter
    raw.setdefault("preprocess", {}).setdefault("augment", {}).update(random_resized_crop=None, horizontal_flip=False)
    raw.setdefault("train", {}).update(epochs=epochs, head_weights=weights if "label_columns" in labels else None)
    # the config's ensemble members stay (params need two): this benchmark never trains them
    return raw


def run(name: str, raw: dict) -> dict:
    done = scratch.train_and_evaluate(f"heads-{name}-", raw)
    result = done["evaluate"]
    heads = result.get("heads") or {raw["data"]["label_column"]: result}
    return {"seconds": done["seconds"], "steps": done["train"]["steps"],
            "heads": {task: (r["accuracy"], r["ci95"]["accuracy"], r["test_rows"]) for task, r in heads.items()}}


def _cell(head) -> str:
    if head is None:
        return "—"
    accuracy, ci, rows = head
    return f"{accuracy:.4f} [{ci['low']:.3f}, {ci['high']:.3f}] ({rows} rows)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=float, default=4)
    parser.add_argument("--weights", default=None, help="train.head_weights of the run with two heads: null (1 each) or uncertainty")
    args = parser.parse_args()
    runs = {name: run(name, params(labels, args.epochs, args.weights)) for name, labels in (
        ("shape", {"label_column": "shape"}), ("colour", {"label_column": "colour"}),
        ("shape+colour", {"label_columns": ["shape", "colour"]}))}
    print(json.dumps(runs, indent=1))
    print("\n| run | train time (s) | steps | test accuracy: shape | test accuracy: colour |\n|---|---|---|---|---|")
    for name, result in runs.items():
        cells = [_cell(result["heads"].get(task)) for task in ("shape", "colour")]
        print(f"| {name} | {result['seconds']:.0f} | {result['steps']} | {' | '.join(cells)} |")
    single = runs["shape"]["seconds"] + runs["colour"]["seconds"]
    multi = runs["shape+colour"]
    gaps = {task: multi["heads"][task][0] - runs[task]["heads"][task][0] for task in ("shape", "colour")}
    print(f"\ntwo heads minus one head each (test accuracy, pt): {', '.join(f'{t} {100 * g:+.2f}' for t, g in gaps.items())}; "
          f"training time {multi['seconds']:.0f} s vs {single:.0f} s for the two single-task models ({multi['seconds'] / single:.2f}x)")
    print(f"bar (each within 1 pt, less time): {'met' if all(g >= -0.01 for g in gaps.values()) and multi['seconds'] < single else 'NOT met'}")


if __name__ == "__main__":
    main()
