"""What the confidence intervals and paired tests cost, as a share of the evaluate and ensemble stages' time.

    python bench/bootstrap_cost.py PROJECT      # a project where `dvc repro ensemble` has run (e.g. the default one)

Times (a) the evaluate and ensemble stages of THIS checkout, each run whole in a fresh process (`python -m stages.X`
in a scratch folder holding this checkout's code and PROJECT's params and inputs, so PROJECT is left untouched), and (b) the exact finetune/scoring/uncertainty.py
calls those stages make, on the same predictions, in this process (median of 5). Prints both and the share.
"""
from __future__ import annotations

import contextlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from finetune.families.classification.probabilities import load_members, member_file  # noqa: E402
from finetune.scoring import uncertainty  # noqa: E402

COPIED = ["params.yaml", "data/raw", "data/prepared", "models/model", "models/pretrained", "reports/evaluate", "reports/members"]


def median_seconds(run, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    project = Path(sys.argv[1]).resolve()
    scratch = Path(tempfile.mkdtemp(prefix="bootstrap-cost-"))
    for name in ("stages", "finetune"):
        shutil.copytree(ROOT / name, scratch / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in (n for n in COPIED if (project / n).exists()):
        source, target = project / name, scratch / name
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if source.is_dir() else shutil.copy)(source, target)
    stage_seconds = {}
    for stage in ("evaluate", "ensemble"):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", f"stages.{stage}"], cwd=scratch, check=True, capture_output=True)
        stage_seconds[stage] = time.perf_counter() - start

    predictions = pd.read_csv(project / "reports/evaluate/predictions.csv")
    labels = sorted(set(predictions["actual"]) | set(predictions["predicted"]))
    actual, predicted = predictions["actual"].map(labels.index).to_numpy(), predictions["predicted"].map(labels.index).to_numpy()
    baseline = np.zeros_like(actual)
    evaluate_calls = lambda: (uncertainty.intervals(actual, {"model": predicted, "baseline": baseline}),  # noqa: E731
                              uncertainty.compare(actual, predicted, baseline))
    names = sorted(path.parent.name for path in (project / "reports/members").glob("*/probabilities.parquet"))
    with contextlib.chdir(project):
        members = load_members(["primary", *names]) if member_file("primary").exists() else load_members(names)
    y = members[0].splits["test"].labels
    test = {m.name: m.splits["test"].probs.argmax(axis=1) for m in members}
    methods = {f"method{i}": list(test.values())[i % len(test)] for i in range(5)}  # the stage scores 5 methods
    ensemble_calls = lambda: (uncertainty.intervals(y, {**test, **methods}),  # noqa: E731
                              [uncertainty.compare(y, test[members[0].name], p) for p in test.values()])
    bootstrap = {"evaluate": median_seconds(evaluate_calls), "ensemble": median_seconds(ensemble_calls)}
    for stage in ("evaluate", "ensemble"):
        print(f"{stage}: stage {stage_seconds[stage]:.1f} s, bootstrap {1000 * bootstrap[stage]:.0f} ms "
              f"= {100 * bootstrap[stage] / stage_seconds[stage]:.2f} % ({len(actual)} test rows)")
    shutil.rmtree(scratch)


if __name__ == "__main__":
    main()
