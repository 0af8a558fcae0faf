"""A number head beside a class head vs one model each (issue 35): builtin:tweets' sentiment (3 classes) and its annotators'
confidence (a number, 0.26..1), the same 6,000 seeded tweets and MiniLM settings as configs/tweets-confidence.yaml. Three
runs of ingest -> preprocess -> train -> evaluate, each in its own scratch folder: sentiment alone, confidence alone
(data.label_type number) and both heads at once (data.label_columns + data.number_heads: masked losses, weights 1 each).
Prints each head's test score with its bootstrap interval and each run's training time.

    PYTHONPATH=. .venv/bin/python bench/number_heads.py [--rows 6000]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import scratch  # bench/scratch.py (this script's folder is on sys.path)
import yaml

ROOT = Path(__file__).resolve().parent.parent


def params(labels: dict, rows: int) -> dict:
    raw = yaml.safe_load((ROOT / "configs/tweets-confidence.yaml").read_text())
    data = {key: value for key, value in raw["data"].items() if key not in ("label_column", "label_type")}
    raw["data"] = data | {"max_rows": rows, **labels}
    number = labels.get("label_type") == "number"
    raw["train"]["early_stopping"] |= {"metric": "rmse" if number else "f1_macro"}
    if number:
        raw["train"]["loss"] = "mse"
    # the config's ensemble member stays (params need one): this benchmark never trains it
    return raw


def run(name: str, raw: dict) -> dict:
    done = scratch.train_and_evaluate(f"number-heads-{name}-", raw)
    result = done["evaluate"]
    heads = result.get("heads") or {("confidence" if "rmse" in result else "sentiment"): result}
    return {"seconds": done["seconds"], "steps": done["train"]["steps"], "heads": heads}


def _cell(result: dict | None, metric: str) -> str:
    if result is None:
        return "—"
    ci = result["ci95"][metric]
    return f"{result[metric]:.4f} [{ci['low']:.3f}, {ci['high']:.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=6000)
    args = parser.parse_args()
    runs = {name: run(name, params(labels, args.rows)) for name, labels in (
        ("sentiment", {"label_column": "sentiment"}), ("confidence", {"label_column": "confidence", "label_type": "number"}),
        ("sentiment+confidence", {"label_columns": ["sentiment", "confidence"], "number_heads": ["confidence"]}))}
    out = ROOT / ".cache/bench/number_heads.json"  # every run's scores, whatever the table below shows
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(runs, indent=1, default=float))
    print(json.dumps({name: {"seconds": r["seconds"], "steps": r["steps"]} for name, r in runs.items()}, indent=1))
    print("\n| run | train time (s) | steps | sentiment macro F1 | confidence RMSE | confidence Spearman |\n|---|---|---|---|---|---|")
    for name, result in runs.items():
        sentiment, confidence = result["heads"].get("sentiment"), result["heads"].get("confidence")
        print(f"| {name} | {result['seconds']:.0f} | {result['steps']} | {_cell(sentiment, 'f1_macro')} | {_cell(confidence, 'rmse')} | "
              f"{_cell(confidence, 'spearman')} |")
    single = runs["sentiment"]["seconds"] + runs["confidence"]["seconds"]
    both = runs["sentiment+confidence"]
    print(f"\nboth heads minus one each: sentiment macro F1 {both['heads']['sentiment']['f1_macro'] - runs['sentiment']['heads']['sentiment']['f1_macro']:+.4f}, "
          f"confidence RMSE {both['heads']['confidence']['rmse'] - runs['confidence']['heads']['confidence']['rmse']:+.4f}; training time "
          f"{both['seconds']:.0f} s vs {single:.0f} s for the two single-head models ({both['seconds'] / single:.2f}x)")


if __name__ == "__main__":
    main()
