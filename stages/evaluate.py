"""evaluate: score the fine-tuned model on the held-out test split.

Writes reports/metrics.json (accuracy, macro/weighted F1, per-class precision/recall/F1/support,
and the majority-class baseline: the most frequent TRAIN label predicted for every test row; each with its
bootstrap 95 % interval, `ci95`, and the model against the baseline on the same rows, `vs_baseline`:
finetune/uncertainty.py),
reports/evaluate/predictions.csv (one row per test example: actual, predicted, probabilities;
dvc.yaml renders it with DVC's confusion template), confusion.png, misclassified.csv (the
most confident errors first) and probabilities.parquet (val + test: this model as an ensemble member).
Several tasks (data.label_columns, finetune/heads.py): each head scored on the test rows that have its label, its files in
reports/evaluate/<task>/ (with its probabilities.parquet), its metrics under `tasks` in metrics.json beside the means
over the heads (`accuracy`, `f1_macro`).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from finetune import metrics, paths, probabilities, uncertainty
from finetune.cli import main
from finetune.heads import IGNORE, Heads
from finetune.io import read_json, write_json, write_outputs, write_table
from finetune.params import Params
from finetune.plots import confusion_png
from finetune.tasks import get_task


def _bracket(ci: dict) -> str:
    return f"[{ci['low']:.4f}, {ci['high']:.4f}]"


def _score(labels: list[str], test: pd.DataFrame, actual: np.ndarray, probs: np.ndarray, train_actual: np.ndarray, shown: pd.Series,
           misclassified_rows: int) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """(metrics, predictions, most confident errors) of one head on the test rows given."""
    predicted = probs.argmax(axis=1)
    majority = int(pd.Series(train_actual).mode()[0])
    baseline = np.full_like(actual, majority)
    ci95 = uncertainty.intervals(actual, {"model": predicted, "baseline": baseline})
    result = {
        **metrics.headline(actual, predicted),
        "ci95": ci95["model"],
        "baseline": {"strategy": f"majority class ({labels[majority]})", **metrics.headline(actual, baseline), "ci95": ci95["baseline"]},
        "vs_baseline": uncertainty.compare(actual, predicted, baseline),
        "per_class": metrics.per_class(actual, predicted, labels),
        "test_rows": len(test),
    }
    name = np.array(labels)
    rows = pd.DataFrame({"id": test["id"], "actual": name[actual], "predicted": name[predicted], "confidence": probs.max(axis=1)})
    for i, label in enumerate(labels):
        rows[f"prob_{label}"] = probs[:, i]
    wrong = rows.assign(**{shown.name: shown.to_numpy()})[rows["actual"] != rows["predicted"]].sort_values("confidence", ascending=False)
    return result, rows, wrong.head(misclassified_rows)


def _write_head(folder, rows: pd.DataFrame, wrong: pd.DataFrame, labels: list[str]) -> None:
    folder.mkdir()
    write_table(folder / "predictions.csv", rows)
    write_table(folder / "misclassified.csv", wrong)
    confusion_png(folder / "confusion.png", rows["actual"], rows["predicted"], labels)


def run(params: Params) -> dict:
    if verb := get_task(params.task).own_verb("evaluate"):  # a task whose evaluate is another verb (a causal LM's)
        return verb(params)
    task = get_task(params.task)
    label_map = read_json(paths.MODEL / "label_map.json")
    test, val = (pd.read_parquet(paths.PREPARED / f"{name}.parquet") for name in ("test", "val"))
    train = pd.read_parquet(paths.PREPARED / "train.parquet", columns=["label", "augmented"])
    train_actual = train.loc[~train["augmented"], "label"]

    model = task.load_trained(str(paths.MODEL), params.train.trust_remote_code)
    processor = task.load_processor(str(paths.MODEL), params.train.trust_remote_code)
    probs = task.predict_proba(model, processor, test, label_map, params.train.eval_batch_size)
    shown = pd.Series(task.display(test).to_numpy(), name=task.display_name)
    keep = params.evaluate.misclassified_rows
    heads = Heads.of(label_map)
    val_probs = task.predict_proba(model, processor, val, label_map, params.train.eval_batch_size)
    splits = {"val": probabilities.Split(val["id"].to_numpy(), val["label"].to_numpy(), val_probs),
              "test": probabilities.Split(test["id"].to_numpy(), test["label"].to_numpy(), probs)}
    if heads.multi:  # several tasks: each head on the test rows that have its label, in its own folder
        return _run_heads(heads, label_map, test, probs, heads.matrix(train_actual), shown, keep, splits)

    labels = label_map["labels"]
    result, rows, wrong = _score(labels, test, test["label"].to_numpy(), probs, train_actual.to_numpy(), shown, keep)
    with write_outputs(paths.EVALUATION, paths.METRICS) as (folder, metrics_file):
        _write_head(folder, rows, wrong, labels)
        probabilities.save(folder / paths.PRIMARY_PROBABILITIES.name, labels, splits)
        write_json(metrics_file, result)
    print(f"evaluate: {_line(result)}")
    return result


def _line(result: dict) -> str:
    return (f"test accuracy {result['accuracy']:.4f}, macro F1 {result['f1_macro']:.4f} {_bracket(result['ci95']['f1_macro'])} "
            f"(majority baseline {result['baseline']['accuracy']:.4f} / {result['baseline']['f1_macro']:.4f}; macro F1 vs baseline: "
            f"{uncertainty.describe(result['vs_baseline'])})")


def _run_heads(heads: Heads, label_map: dict, test: pd.DataFrame, probs: np.ndarray, train_actual: np.ndarray, shown: pd.Series,
               keep: int, splits: dict) -> dict:
    actual = heads.matrix(test["label"])
    scored = {}
    for i, (task, columns) in enumerate(heads.columns(probs).items()):
        labelled = actual[:, i] != IGNORE
        known = train_actual[:, i] != IGNORE
        scored[task] = _score(heads.tasks[task], test[labelled], actual[labelled, i], columns[labelled], train_actual[known, i],
                              shown[labelled], keep)
    result = {"accuracy": float(np.mean([r["accuracy"] for r, _, _ in scored.values()])),
              "f1_macro": float(np.mean([r["f1_macro"] for r, _, _ in scored.values()])),
              "tasks": {task: r for task, (r, _, _) in scored.items()}, "test_rows": len(test)}
    with write_outputs(paths.EVALUATION, paths.METRICS) as (folder, metrics_file):
        folder.mkdir()
        for task, (_, rows, wrong) in scored.items():
            _write_head(folder / task, rows, wrong, heads.tasks[task])
        probabilities.save_heads(folder / paths.PRIMARY_PROBABILITIES.name, label_map, splits)
        write_json(metrics_file, result)
    for task, (r, _, _) in scored.items():
        print(f"evaluate {task}: {_line(r)}")
    print(f"evaluate: mean over {len(scored)} tasks: accuracy {result['accuracy']:.4f}, macro F1 {result['f1_macro']:.4f}")
    return result


if __name__ == "__main__":
    main(run, __doc__)
