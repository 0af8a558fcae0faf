"""Members vs ensemble methods on the last pipeline run, as a Markdown table for docs/benchmarks/ensembles.md.

    make pipeline && python bench/ensemble_table.py

Reads reports/ensemble.json (scores), reports/train.json and reports/member_summaries/*.json
(training time of each member) and prints one row per member and per method, plus the time
the members cost. Nothing is recomputed: these are the numbers `dvc metrics show` reports.
"""
from __future__ import annotations

import json
from pathlib import Path


def main() -> None:
    result = json.loads(Path("reports/ensemble.json").read_text())
    seconds = {"primary": json.loads(Path("reports/train.json").read_text())["train_runtime_s"]}
    for name in result["members"]:
        summary = Path(f"reports/member_summaries/{name}.json")
        if summary.exists():
            seconds[name] = json.loads(summary.read_text())["train_runtime_s"]
    print("| row | val acc. | val macro-F1 | test acc. | test macro-F1 | training time (s) |")
    print("|---|---|---|---|---|---|")
    for name, scores in result["members"].items():
        print(f"| member `{name}` | {scores['val']['accuracy']:.4f} | {scores['val']['f1_macro']:.4f} | "
              f"{scores['test']['accuracy']:.4f} | {scores['test']['f1_macro']:.4f} | {seconds.get(name, float('nan')):.0f} |")
    for name, scores in result["methods"].items():
        chosen = " (chosen)" if name == result["method"] else ""
        print(f"| method `{name}`{chosen} | {scores['val']['accuracy']:.4f}* | {scores['val']['f1_macro']:.4f}* | "
              f"{scores['test']['accuracy']:.4f} | {scores['test']['f1_macro']:.4f} | {sum(seconds.values()):.0f} (all members) |")
    print("\n*in-sample for weighted and stacking (fitted on val)")
    print(f"weights: {json.dumps({k: round(v, 3) for k, v in result['weights'].items()})}")
    print(f"temperatures: {json.dumps({k: round(v, 2) for k, v in result['temperatures'].items()})}")
    best = result["best_member_on_val"]
    print(f"chosen {result['method']}: test macro-F1 {result['f1_macro']:.4f} vs best member on val ({best['name']}) "
          f"{best['f1_macro']:.4f}: {100 * (result['f1_macro'] - best['f1_macro']):+.2f} pt")


if __name__ == "__main__":
    main()
