"""A model card (README.md in the Hugging Face card format: YAML metadata, then sections) for an exported model folder,
written from what the pipeline recorded: the folder's pipeline.json (task, params), the run's reports (data, test scores
with their 95 % intervals, the baseline) and the git commit of the code. Nothing in it is typed by hand."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

PIPELINE_TAGS = {"text-classification": "text-classification", "image-classification": "image-classification",
                 "causal-lm": "text-generation"}
COMPRESSED_METHODS = {"int8": "int8", "pruned": "prune", "distilled": "distill"}


def _read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def test_scores(folder: Path, reports: Path) -> tuple[str, dict]:
    """(which run scored this folder, its test scores) from the reports of the project it was trained in."""
    parts = folder.resolve().parts
    if parts[-2:] == ("models", "model"):
        return "the evaluate stage (reports/metrics.json)", _read(reports / "metrics.json")
    if len(parts) > 2 and parts[-3:-1] == ("models", "members"):
        return f"the member stage (reports/member_summaries/{parts[-1]}.json)", _read(reports / "member_summaries" / f"{parts[-1]}.json").get("test", {})
    if len(parts) > 2 and parts[-3:-1] == ("models", "compressed") and parts[-1] in COMPRESSED_METHODS:
        return "the compress stage (reports/compress.json)", _read(reports / "compress.json").get("models", {}).get(COMPRESSED_METHODS[parts[-1]], {})
    return "", {}


def commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, check=False).stdout.strip()
        return f"{sha}{' (with uncommitted changes)' if dirty else ''}"
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def _score_lines(scores: dict) -> list[str]:
    lines = []
    for name in ("accuracy", "f1_macro", "f1_weighted", "rmse", "mae", "r2", "spearman", "perplexity", "token_accuracy"):
        if isinstance(scores.get(name), (int, float)):
            interval = (scores.get("ci95") or {}).get(name) or {}
            shown = f" (95 % interval {interval['low']:.4f} to {interval['high']:.4f})" if "low" in interval else ""
            lines.append(f"| {name} | {scores[name]:.4f}{shown} |")
    return lines


def card(folder: Path, reports: Path, onnx: dict | None = None, not_portable: str | None = None) -> str:
    saved = _read(folder / "pipeline.json")
    task, params = saved["task"], saved["params"]
    label_map = _read(folder / "label_map.json")
    data, train, labels = params["data"], params["train"], label_map.get("labels", [])
    scorer, scores = test_scores(folder, reports)
    ingest, preprocess = _read(reports / "ingest.json"), _read(reports / "preprocess.json")
    metadata = {"library_name": "transformers" if (folder / "config.json").is_file() else "finetune-pipeline",
                "pipeline_tag": PIPELINE_TAGS.get(task, task), "tags": ["finetune-pipeline", task],
                **({"base_model": train["model"]} if not train["model"].startswith(("builtin:", "models/")) else {})}
    lines = [f"---\n{yaml.safe_dump(metadata, sort_keys=False).strip()}\n---", f"# {task}: {folder.name}", "",
             f"Fine-tuned from `{train['model']}` by finetune-pipeline at commit `{commit()}`.",
             "Everything below was generated from the run's own records (`pipeline.json` holds every parameter).", "",
             "## Data", "", f"- Source: `{data['source']}`" + (f", {ingest['rows_kept']:,} of {ingest['rows_read']:,} rows kept" if ingest else "")]
    if preprocess.get("splits"):
        lines.append("- Splits: " + ", ".join(f"{name} {split['rows']:,}" for name, split in preprocess["splits"].items()))
    if "target" in label_map:  # a numeric label (finetune/data/numbers.py)
        target = label_map["target"]
        lines.append(f"- Label: `{target['column']}`, a number (train mean {target['mean']:.4g}, standard deviation {target['std']:.4g})")
    elif labels:
        lines.append(f"- Labels ({len(labels)}): " + ", ".join(f"`{label}`" for label in labels))
    for head, target in (label_map.get("targets") or {}).items():  # number heads beside class heads (finetune/data/heads.py)
        lines.append(f"- Head `{head}`: column `{target['column']}`, a number (train mean {target['mean']:.4g}, standard deviation {target['std']:.4g})")
    lines += ["", "## Training", "", "| parameter | value |", "|---|---|"]
    lines += [f"| train.{key} | `{train[key]}` |" for key in ("model", "strategy", "epochs", "batch_size", "learning_rate", "lr_scheduler", "seed")
              if key in train]
    lines += ["", "## Test results", ""]
    if scores:
        lines += [f"Scored by {scorer} on the held-out test split ({scores.get('test_rows', 'all')} rows).", "", "| metric | value |", "|---|---|"]
        lines += _score_lines(scores)
        if isinstance(scores.get("baseline"), dict):
            baseline = scores["baseline"]
            lines += ["", f"Baseline ({baseline.get('strategy', 'the untouched model')}):", "", "| metric | value |", "|---|---|", *_score_lines(baseline)]
    else:
        lines.append("No test scores were found for this folder in the project's reports/.")
    if onnx:
        lines += ["", "## ONNX", "", (f"`model.onnx` beside the weights (onnxruntime, CPU): on the {onnx['rows']} test rows it gives the same "
                  f"label as PyTorch on {100 * onnx['agreement']:.2f} % of them, probabilities at most {onnx['max_probability_difference']:.2e} apart.")]
    limits = (f"Predicts {'the label of' if labels else 'the next tokens of'} new inputs like the training data (`{data['source']}`), read "
              "and preprocessed exactly as in training (`finetune predict` applies `pipeline.json`'s settings). The scores above hold for "
              "data like the test split; other sources, languages, image styles or label definitions need their own test. "
              + ("The label set is fixed: an input of another class still gets one of these labels. " if labels else "")
              + "Check the report's most confident errors before relying on it.")
    lines += ["", "## Intended use and limits", "", limits, "",
              "## How to use", "", "```", f"finetune predict --model {folder.name} --input new.csv --output predictions.csv", "```"]
    if not_portable:
        lines += ["", f"Other libraries: {not_portable}."]
    elif task in PIPELINE_TAGS and labels:
        lines += ["", "or with transformers alone (without this pipeline's input normalisation and checks):", "", "```python",
                  "from transformers import pipeline", f"classify = pipeline(\"{PIPELINE_TAGS[task]}\", model=\"{folder.name}\")", "```"]
    return "\n".join(lines) + "\n"
