"""evaluate for classifiers: score the fine-tuned model on the held-out test split.

Writes the metrics (accuracy, macro/weighted F1, per-class precision/recall/F1/support, and the majority-class baseline:
the most frequent TRAIN label predicted for every test row; each with its bootstrap 95 % interval, `ci95`, and the model
against the baseline on the same rows, `vs_baseline`: finetune/scoring/uncertainty.py), and into reports/evaluate/:
predictions.csv (one row per test example: actual, predicted, probabilities; dvc.yaml renders it with DVC's confusion
template), confusion.png, misclassified.csv (the most confident errors first) and probabilities.parquet (val + test:
this model as an ensemble member).
Several heads (finetune/data/heads.py): each head scored on the test rows that have its label, its files in
reports/evaluate/<head>/ (with its probabilities.parquet), its metrics under `heads` beside the means over the class heads
(a number head is scored as a numeric label below).
A numeric label (finetune/data/numbers.py): rmse, mae, r2 and spearman with intervals, the train mean as the baseline;
predictions.csv (actual, predicted, error), largest_errors.csv in place of misclassified.csv, scatter.png in place of
confusion.png.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from finetune import paths
from finetune.data import numbers
from finetune.data.heads import Head, combined, each_head
from finetune.families.classification import probabilities
from finetune.io import read_json, write_table
from finetune.reporting.plots import confusion_png, scatter_png
from finetune.scoring import metrics, uncertainty
from finetune.scoring import numbers as number_scores


def _bracket(ci: dict) -> str:
    return f"[{ci['low']:.4f}, {ci['high']:.4f}]"


def _score(head: Head, test: pd.DataFrame, train_actual: np.ndarray, shown: pd.Series, misclassified_rows: int) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """(metrics, predictions, most confident errors) of one head on the test rows that have its label."""
    labels, actual, probs, test, shown = head.classes, head.actual, head.probs, test[head.labelled], shown[head.labelled]
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


def _score_numbers(label_map: dict, test: pd.DataFrame, actual: np.ndarray, predicted: np.ndarray, shown: pd.Series, folder: Path,
                   rows_kept: int, head: str | None = None) -> dict:
    """A numeric label's (a number head's) metrics, and its files in folder."""
    actual, mean = np.asarray(actual, dtype=np.float64), label_map["target"]["mean"]
    baseline = np.full_like(actual, mean)
    ci95 = number_scores.intervals(actual, {"model": predicted, "baseline": baseline})
    result = {**number_scores.scores(actual, predicted), "ci95": ci95["model"],
              "baseline": {"strategy": f"train mean ({mean:.4g})", **number_scores.scores(actual, baseline), "ci95": ci95["baseline"]},
              "vs_baseline": number_scores.compare(actual, predicted, baseline), "test_rows": len(test)}
    rows = pd.DataFrame({"id": test["id"], "actual": actual, "predicted": predicted, "error": predicted - actual})
    largest = rows.assign(**{shown.name: shown.to_numpy()}).iloc[np.argsort(-np.abs(rows["error"].to_numpy()), kind="stable")]
    write_table(folder / "predictions.csv", rows)
    write_table(folder / "largest_errors.csv", largest.head(rows_kept))
    scatter_png(folder / "scatter.png", actual, predicted, column=label_map["target"]["column"])
    print(f"evaluate{' ' + head if head else ''}: test rmse {result['rmse']:.4g}, mae {result['mae']:.4g} {_bracket(result['ci95']['mae'])}, r2 {result['r2']:.4f}, "
          f"spearman {result['spearman']:.4f} (train-mean baseline rmse {result['baseline']['rmse']:.4g}, mae {result['baseline']['mae']:.4g}; "
          f"mae vs baseline: {uncertainty.describe(result['vs_baseline'], 'mae')})")
    return result


def run(task, params, folder: Path) -> dict:
    label_map = read_json(paths.MODEL / "label_map.json")
    test, val = (pd.read_parquet(paths.PREPARED / f"{name}.parquet") for name in ("test", "val"))
    train = pd.read_parquet(paths.PREPARED / "train.parquet", columns=["label", "augmented"])
    train_actual = train.loc[~train["augmented"], "label"]

    model = task.models.load_trained(str(paths.MODEL), params.train.trust_remote_code)
    processor = task.models.load_processor(str(paths.MODEL), params.train.trust_remote_code)
    batch = params.train.eval_batch_size
    probs, val_probs = (task.predict_proba(model, processor, frame, label_map, batch) for frame in (test, val))
    shown = pd.Series(task.display(test).to_numpy(), name=task.display_name)
    splits = {"val": probabilities.Split(val["id"].to_numpy(), val["label"].to_numpy(), val_probs),
              "test": probabilities.Split(test["id"].to_numpy(), test["label"].to_numpy(), probs)}
    probabilities.save_heads(folder / paths.PRIMARY_PROBABILITIES.name, label_map, splits)
    if numbers.is_number(label_map):
        return _score_numbers(label_map, test, test["label"], probs[:, 0], shown, folder, params.evaluate.misclassified_rows)
    trained_on = {head.name: head.actual for head in each_head(label_map, train_actual, np.zeros((len(train_actual), len(label_map["labels"]))))}
    results = {}
    for head in each_head(label_map, test["label"], probs):
        out = head.folder(folder)
        out.mkdir(exist_ok=True)
        if head.target:  # a number head
            results[head.name] = _score_numbers(head.label_map, test[head.labelled], head.actual, head.probs[:, 0], shown[head.labelled],
                                                out, params.evaluate.misclassified_rows, head.name)
            continue
        results[head.name], rows, wrong = _score(head, test, trained_on[head.name], shown, params.evaluate.misclassified_rows)
        write_table(out / "predictions.csv", rows)
        write_table(out / "misclassified.csv", wrong)
        confusion_png(out / "confusion.png", rows["actual"], rows["predicted"], head.classes)
        print(f"evaluate{' ' + head.name if head.name else ''}: {_line(results[head.name])}")
    result = combined(results, test_rows=len(test))
    if "heads" in result:
        print(f"evaluate: mean over {len(results)} heads: accuracy {result['accuracy']:.4f}, macro F1 {result['f1_macro']:.4f}")
    return result


def _line(result: dict) -> str:
    return (f"test accuracy {result['accuracy']:.4f}, macro F1 {result['f1_macro']:.4f} {_bracket(result['ci95']['f1_macro'])} "
            f"(majority baseline {result['baseline']['accuracy']:.4f} / {result['baseline']['f1_macro']:.4f}; macro F1 vs baseline: "
            f"{uncertainty.describe(result['vs_baseline'])})")
