"""Matplotlib figures the stages write as PNG (rendered offline, embedded in the report)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from finetune.io import atomic_path  # noqa: E402


def save(figure, path) -> None:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110)
    plt.close(figure)


def confusion_png(path, actual: list[str], predicted: list[str], labels: list[str], title: str = "Test confusion matrix") -> None:
    from sklearn.metrics import ConfusionMatrixDisplay  # here: the report stage plots no confusion matrix (a second of imports)

    figure, axes = plt.subplots(figsize=(1.2 * len(labels) + 3, 1.2 * len(labels) + 2.5))
    ConfusionMatrixDisplay.from_predictions(actual, predicted, labels=labels, ax=axes, cmap="Blues", colorbar=False)
    axes.set_title(f"{title} (rows: actual)")
    figure.tight_layout()
    save(figure, path)


def scatter_png(path, actual, predicted, title: str = "Test predictions", column: str = "label") -> None:
    """Predicted against actual numeric labels, with the line where they are equal (a regression head's confusion matrix)."""
    import numpy as np

    actual, predicted = np.asarray(actual, dtype=float), np.asarray(predicted, dtype=float)
    figure, axes = plt.subplots(figsize=(5.5, 5))
    axes.scatter(actual, predicted, s=8, alpha=0.35 if len(actual) > 500 else 0.7, edgecolors="none")
    low, high = float(min(actual.min(), predicted.min())), float(max(actual.max(), predicted.max()))
    axes.plot([low, high], [low, high], color="grey", linewidth=1, linestyle="--", label="predicted = actual")
    axes.set_xlabel(f"actual {column}")
    axes.set_ylabel(f"predicted {column}")
    axes.set_title(title)
    axes.legend(loc="upper left")
    figure.tight_layout()
    save(figure, path)
