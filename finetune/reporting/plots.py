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
