"""The whole `dvc repro` of configs/image.yaml with only the data changed (issue 40's bar: on a small image set the
default fine-tune scores at least its `pixels` member, within 10 minutes on 2 cores). Every stage runs, ingest to
report, in a scratch copy of this commit; prints each stage's seconds (DVC's own "Running stage" lines, as
tools/record_run.py times the committed runs) and the test accuracy, with its 95 % interval, of the fine-tune, each
member, the ensemble and each compressed model.

    PYTHONPATH=. .venv/bin/python bench/small_repro.py                        # scikit-learn's digits
    PYTHONPATH=. .venv/bin/python bench/small_repro.py --source builtin:fashion-mnist --max-rows '{train: 2000, test: 2000}'
    PYTHONPATH=. .venv/bin/python bench/small_repro.py --source builtin:easy-vqa-shapes --label-column shape
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import scratch  # bench/scratch.py (this script's folder is on sys.path)
import yaml

sys.path.insert(0, str(scratch.ROOT / "tools"))
from record_run import timed_repro  # noqa: E402


def interval(result: dict) -> str:
    ci = result["ci95"]["accuracy"]
    return f"{result['accuracy']:.4f} [{ci['low']:.4f}, {ci['high']:.4f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="builtin:digits")
    parser.add_argument("--max-rows", type=yaml.safe_load, default=None, help="data.max_rows as YAML")
    parser.add_argument("--label-column", default=None, help="data.label_column (easy-vqa-shapes: shape or colour)")
    parser.add_argument("--keep", type=Path, default=None, help="run in this folder (default: a new temporary one)")
    args = parser.parse_args()
    raw = yaml.safe_load((scratch.ROOT / "configs/image.yaml").read_text())
    raw["data"] |= {"source": args.source, "max_rows": args.max_rows}
    if args.label_column:
        raw["data"]["label_column"] = args.label_column
    work = scratch.project(raw, args.keep, "small-repro-")
    scratch.commit(work)
    stages, seconds = timed_repro(work)
    reports = work / "reports"
    read = lambda name: json.loads((reports / name).read_text())  # noqa: E731
    print(f"\n{args.source}{' / ' + args.label_column if args.label_column else ''}: test accuracy [95 %]")
    print(f"  fine-tune   {interval(read('metrics.json'))}")
    for member in raw["ensemble"]["members"]:  # the checkout's own summaries (the text run's) are in git too
        print(f"  {member:<11} {interval(read(f'member_summaries/{member}.json')['test'])}")
    print(f"  ensemble    {interval(read('ensemble.json'))} ({read('ensemble.json')['method']})")
    for name, model in read("compress.json")["models"].items():
        print(f"  {'compress ' + name:<11} {interval(model)}")
    print(f"whole dvc repro: {seconds / 60:.1f} min; stages (s): {stages}")


if __name__ == "__main__":
    main()
