"""evaluate: score the fine-tuned model on the held-out test split.

Writes reports/metrics.json (accuracy, macro/weighted F1, per-class precision/recall/F1/support,
and the majority-class baseline: the most frequent TRAIN label predicted for every test row; each with its
bootstrap 95 % interval, `ci95`, and the model against the baseline on the same rows, `vs_baseline`:
finetune/uncertainty.py),
reports/evaluate/predictions.csv (one row per test example: actual, predicted, probabilities;
dvc.yaml renders it with DVC's confusion template), confusion.png, misclassified.csv (the
most confident errors first) and probabilities.parquet (val + test: this model as an ensemble member).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from finetune import metrics, paths, probabilities, uncertainty
from finetune.cli import main
from finetune.io import read_json, write_json, write_outputs, write_table
from finetune.params import Params
from finetune.plots import confusion_png
from finetune.tasks import get_task


def _bracket(ci: dict) -> str:
    return f"[{ci['low']:.4f}, {ci['high']:.4f}]"


def run(params: Params) -> dict:
    if verb := get_task(params.task).own_verb("evaluate"):  # a task whose evaluate is another verb (a causal LM's)
        return verb(params)
    task = get_task(params.task)
    label_map = read_json(paths.MODEL / "label_map.json")
    labels = label_map["labels"]
    test, val = (pd.read_parquet(paths.PREPARED / f"{name}.parquet") for name in ("test", "val"))
    train_labels = pd.read_parquet(paths.PREPARED / "train.parquet", columns=["label", "augmented"])

    model = task.load_trained(str(paths.MODEL), params.train.trust_remote_code)
    processor = task.load_processor(str(paths.MODEL), params.train.trust_remote_code)
    probs = task.predict_proba(model, processor, test, label_map, params.train.eval_batch_size)
    val_probs = task.predict_proba(model, processor, val, label_map, params.train.eval_batch_size)
    predicted = probs.argmax(axis=1)
    actual = test["label"].to_numpy()

    majority = int(train_labels.loc[~train_labels["augmented"], "label"].mode()[0])
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
    shown = rows.assign(**{task.display_name: task.display(test).to_numpy()})
    wrong = shown[rows["actual"] != rows["predicted"]].sort_values("confidence", ascending=False)
    splits = {"val": probabilities.Split(val["id"].to_numpy(), val["label"].to_numpy(), val_probs),
              "test": probabilities.Split(test["id"].to_numpy(), actual, probs)}

    with write_outputs(paths.EVALUATION, paths.METRICS) as (folder, metrics_file):
        folder.mkdir()
        write_table(folder / "predictions.csv", rows)
        write_table(folder / "misclassified.csv", wrong.head(params.evaluate.misclassified_rows))
        confusion_png(folder / "confusion.png", rows["actual"], rows["predicted"], labels)
        probabilities.save(folder / paths.PRIMARY_PROBABILITIES.name, labels, splits)
        write_json(metrics_file, result)
    print(
        f"evaluate: test accuracy {result['accuracy']:.4f}, macro F1 {result['f1_macro']:.4f} {_bracket(result['ci95']['f1_macro'])} "
        f"(majority baseline {result['baseline']['accuracy']:.4f} / {result['baseline']['f1_macro']:.4f}; macro F1 vs baseline: "
        f"{uncertainty.describe(result['vs_baseline'])})"
    )
    return result


if __name__ == "__main__":
    main(run, __doc__)
