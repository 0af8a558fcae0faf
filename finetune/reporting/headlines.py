"""The last run's headline numbers, one short line per stage (`finetune results`): each stage's top-level numbers, a
score with its 95 % interval where it has one, the baseline's, and each compressed model's. `dvc metrics show` lists every
nested number of every metrics file instead (294 columns on the text run); the files keep them all.

Why the metrics files stay as they are: moving the details out of dvc.yaml's `metrics` would make them plain outputs, and
a `cache: false` plain output switches off DVC's run cache for its stage; cached, they would leave git. As `cache: false`
metrics they are both readable in git and restorable by a teammate (`make push` uploads DVC's cached copy of each:
tools/runs.py, docs/team-sharing.md)."""
from __future__ import annotations

import json
from pathlib import Path

STAGES = ("ingest", "preprocess", "train", "metrics", "ensemble", "compress", "explain")
SHOWN_MODEL_KEYS = ("accuracy", "f1_macro", "perplexity", "size_mb", "speedup_batch_32", "agreement_with_teacher")


def _number(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _scalars(data: dict, intervals: dict) -> list[str]:
    parts = []
    for key, value in data.items():
        if isinstance(value, (int, float, str, bool)) and not (isinstance(value, str) and len(value) > 60):
            interval = intervals.get(key)
            shown = f" [{_number(interval['low'])}, {_number(interval['high'])}]" if isinstance(interval, dict) and "low" in interval else ""
            parts.append(f"{key} {_number(value)}{shown}")
    return parts


def headline(name: str, data: dict) -> str:
    if isinstance(data.get("skipped"), str):  # the stage did not apply (e.g. no compression method fits the model)
        return f"{name}: skipped ({data['skipped']})"
    parts = _scalars(data, data.get("ci95") or {})
    if isinstance(data.get("baseline"), dict):
        parts.append("baseline: " + ", ".join(_scalars(data["baseline"], data["baseline"].get("ci95") or {})))
    if name == "compress" and isinstance(data.get("models"), dict):
        parts += [f"{model}: " + ", ".join(f"{key} {_number(row[key])}" for key in SHOWN_MODEL_KEYS if key in row)
                  for model, row in data["models"].items() if isinstance(row, dict)]
    return f"{name}: " + "; ".join(parts)


def headlines(reports: Path) -> list[str]:
    """One line per stage whose metrics file exists in `reports`; a note when none does."""
    lines = [headline(name, json.loads((reports / f"{name}.json").read_text(encoding="utf-8")))
             for name in STAGES if (reports / f"{name}.json").is_file()]
    return lines or [f"no results in {reports}/ yet: run the pipeline (finetune run)"]

