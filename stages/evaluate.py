"""evaluate: score the fine-tuned model on the held-out test split.

Writes reports/metrics.json (accuracy, macro/weighted F1, per-class precision/recall/F1/support,
and the majority-class baseline: the most frequent TRAIN label predicted for every test row),
reports/evaluate/predictions.csv (one row per test example: actual, predicted, probabilities;
dvc.yaml renders it with DVC's confusion template), confusion.png, misclassified.csv (the
most confident errors first) and probabilities.parquet (val + test: this model as an ensemble member).
"""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay  # noqa: E402

from finetune import metrics, paths, probabilities  # noqa: E402
from finetune.cli import main  # noqa: E402
from finetune.io import atomic_path, read_json, write_json, write_table  # noqa: E402
from finetune.params import Params  # noqa: E402
from finetune.tasks import get_task  # noqa: E402


def confusion_png(path, actual: list[str], predicted: list[str], labels: list[str], title: str = "Test confusion matrix") -> None:
    figure, axes = plt.subplots(figsize=(1.2 * len(labels) + 3, 1.2 * len(labels) + 2.5))
    ConfusionMatrixDisplay.from_predictions(actual, predicted, labels=labels, ax=axes, cmap="Blues", colorbar=False)
    axes.set_title(f"{title} (rows: actual)")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110)
    plt.close(figure)


def run(params: Params) -> dict:
    task = get_task(params.task)
    label_map = read_json(paths.MODEL / "label_map.json")
    labels = label_map["labels"]
    test, val = (pd.read_parquet(paths.PREPARED / f"{name}.parquet") for name in ("test", "val"))
    train_labels = pd.read_parquet(paths.PREPARED / "train.parquet", columns=["label", "augmented"])

    model = task.load_trained(str(paths.MODEL), params.train.trust_remote_code)
    processor = task.load_processor(str(paths.MODEL), params.train.trust_remote_code)
    probs = task.predict_proba(model, processor, test, label_map["features"], params.train.eval_batch_size)
    val_probs = task.predict_proba(model, processor, val, label_map["features"], params.train.eval_batch_size)
    predicted = probs.argmax(axis=1)
    actual = test["label"].to_numpy()

    majority = int(train_labels.loc[~train_labels["augmented"], "label"].mode()[0])
    result = {
        **metrics.headline(actual, predicted),
        "baseline": {"strategy": f"majority class ({labels[majority]})", **metrics.headline(actual, np.full_like(actual, majority))},
        "per_class": metrics.per_class(actual, predicted, labels),
        "test_rows": len(test),
    }
    name = np.array(labels)
    rows = pd.DataFrame({"id": test["id"], "actual": name[actual], "predicted": name[predicted], "confidence": probs.max(axis=1)})
    for i, label in enumerate(labels):
        rows[f"prob_{label}"] = probs[:, i]
    with_text = rows.assign(text=test["text"].to_numpy())
    wrong = with_text[rows["actual"] != rows["predicted"]].sort_values("confidence", ascending=False)

    paths.EVALUATION.mkdir(parents=True, exist_ok=True)
    write_table(paths.EVALUATION / "predictions.csv", rows)
    write_table(paths.EVALUATION / "misclassified.csv", wrong.head(params.evaluate.misclassified_rows))
    confusion_png(paths.EVALUATION / "confusion.png", rows["actual"], rows["predicted"], labels)
    splits = {"val": probabilities.Split(val["id"].to_numpy(), val["label"].to_numpy(), val_probs),
              "test": probabilities.Split(test["id"].to_numpy(), actual, probs)}
    probabilities.save(paths.PRIMARY_PROBABILITIES, labels, splits)
    write_json(paths.METRICS, result)
    print(
        f"evaluate: test accuracy {result['accuracy']:.4f}, macro F1 {result['f1_macro']:.4f} "
        f"(majority baseline {result['baseline']['accuracy']:.4f} / {result['baseline']['f1_macro']:.4f})"
    )
    return result


if __name__ == "__main__":
    main(run, __doc__)
