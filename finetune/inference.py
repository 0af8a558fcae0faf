"""Predictions of a trained model on new rows: `finetune predict` (this module) and `finetune serve` (finetune/serving.py).

Every model folder the pipeline writes (models/model, models/members/<name>, models/compressed/<method>) holds, beside
its weights, label_map.json (the features' layout) and pipeline.json (the task and the params it was trained with), so
it predicts wherever it is copied, through the code that prepared its training rows (finetune/families/<family>/
predict.py). A classifier writes, per input row, its data row number, the input as the reports show it, the label and
the probability of each class (several heads: a label column and probability columns per head); a causal LM writes
each text's tokens, loss and perplexity. Rows that cannot be read or used go to the rejects file with the reason
(never dropped silently); outputs are written all or nothing.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from finetune import paths
from finetune.data.tables import BadRow
from finetune.errors import UserError
from finetune.io import read_json, write_outputs, write_table

FORMATS = (".csv", ".jsonl", ".parquet")
REJECT_COLUMNS = ["row", "line", "problem", "content"]


@dataclass
class Predicted:
    table: pd.DataFrame  # one row per predicted input
    bad: list[BadRow] = field(default_factory=list)  # the rows refused, each with its reason

    @property
    def rejects(self) -> pd.DataFrame:
        rows = [(b.row, b.line, b.problem, b.content) for b in sorted(self.bad, key=lambda b: b.row)]
        return pd.DataFrame(rows, columns=REJECT_COLUMNS)


BACKENDS = ("torch", "onnx")


def load(model_dir: str | Path, trust_remote_code: bool = False, backend: str = "torch"):
    """The predictor of a trained model folder (the task's family's: predict(path, batch_size) -> Predicted); backend onnx
    runs the folder's model.onnx (finetune export --onnx) with onnxruntime instead of PyTorch."""
    from finetune.tasks import get_task

    folder = Path(model_dir)
    if not folder.is_dir():
        raise UserError(f"--model {folder}: no such folder (a trained model: models/model, models/members/NAME, models/compressed/METHOD)")
    record = folder / paths.TRAINED_WITH
    if not record.is_file():
        raise UserError(f"--model {folder}: no {paths.TRAINED_WITH} in it, so how to prepare its inputs is unknown; predict reads "
                        "the folders this pipeline trains (models/model, models/members/NAME, models/compressed/METHOD); a model "
                        "trained before predict existed needs `dvc repro` once")
    try:
        task_name = read_json(record)["task"]
    except (ValueError, KeyError, TypeError):
        raise UserError(f"{record} is not a trained model's record (a JSON object naming the task)") from None
    return get_task(task_name).predictor(folder, trust_remote_code, backend)


def check_output(path: Path, what: str) -> None:
    if path.suffix.lower() not in FORMATS:
        raise UserError(f"{what} {path}: expected a file ending in {', '.join(FORMATS)}")


def predict_file(model_dir: str | Path, input_path: str | Path, output: str | Path, rejects: str | Path | None = None,
                 batch_size: int | None = None, trust_remote_code: bool = False, backend: str = "torch") -> dict:
    """Predict every row of input_path into output (and its rejects, by default OUTPUT.rejects.csv beside it): a summary."""
    input_path, output = Path(input_path), Path(output)
    rejects = Path(rejects) if rejects else output.with_name(f"{output.stem}.rejects.csv")
    check_output(output, "--output")
    check_output(rejects, "--rejects")
    if not input_path.exists():
        raise UserError(f"--input {input_path}: no such file or folder")
    if batch_size is not None and batch_size < 1:
        raise UserError(f"--batch-size {batch_size}: expected at least 1")
    predictor = load(model_dir, trust_remote_code, backend)
    start = time.perf_counter()
    result = predictor.predict(input_path, batch_size)
    seconds = time.perf_counter() - start
    if result.table.empty:
        reasons = "; ".join(f"row {b.row}: {b.problem}" for b in sorted(result.bad, key=lambda b: b.row)[:3])
        raise UserError(f"--input {input_path}: none of its {len(result.bad)} rows can be predicted ({reasons}{'; ...' if len(result.bad) > 3 else ''})"
                        if result.bad else f"--input {input_path}: no rows to predict")
    with write_outputs(output, rejects) as (predictions_file, rejects_file):
        write_table(predictions_file, result.table)
        write_table(rejects_file, result.rejects)
    summary = {"rows": len(result.table), "rejected": len(result.bad), "seconds": round(seconds, 3),
               "rows_per_second": round(len(result.table) / seconds, 1) if seconds else None}
    refused = f"; {summary['rejected']} rejected (see {rejects})" if result.bad else ""
    print(f"predict: {summary['rows']} rows in {seconds:.1f} s ({summary['rows_per_second']} rows/s) -> {output}{refused}")
    return summary
