"""explain for classifiers: why the fine-tuned model (models/model) predicted what it did, and whether that is faithful.

Examples (explain.examples, from the test split): a quarter each of the most confident errors, the most confident
predictions and the least confident ones, the rest drawn at random (explain.seed). The task's explainer does the rest
(text: token attributions, its explain.py: Integrated Gradients, gradient x input and attention per token, deletion
faithfulness against random deletions, the global view per class, and the compressed models' drift from their teacher;
images: the same per pixel, with occlusion, Grad-CAM and attention rollout, deleting image patches). A task without an
explainer raises Unsupported: the stage writes the reason as its result, never a crash.
Several heads (data.label_columns): each head is explained on the test rows that have its label, through a view of the
model that returns that head's logits alone (finetune/training/head_loss.py HeadView); each head's under `heads`.
A numeric label (finetune/data/numbers.py): the predicted value is explained (NumberView: in the label's units); the
examples are a quarter each of the largest errors, the highest and the lowest predictions, the rest at random.
Writes the metrics (reports/explain.json) and attributions.json (every score, for other tools) into reports/explain/.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from finetune import paths
from finetune.data import numbers
from finetune.data.heads import Heads, each_head
from finetune.data.labels import read_labelled_csv
from finetune.errors import UserError
from finetune.io import read_json, write_json
from finetune.training.head_loss import HeadView, NumberView


def select_examples(predictions: pd.DataFrame, count: int, seed: int, number: bool = False) -> list[tuple[int, str]]:
    """(row position in the test split, why it was chosen), most telling first."""
    confidence = predictions["confidence"]
    quarter = max(1, count // 4)
    if number:  # `confidence` is the predicted value
        groups = [(predictions["error"].abs().sort_values(ascending=False, kind="stable").index, "largest error"),
                  (confidence.sort_values(ascending=False, kind="stable").index, "highest prediction"),
                  (confidence.sort_values(kind="stable").index, "lowest prediction")]
    else:
        wrong = predictions.index[predictions["actual"] != predictions["predicted"]]
        groups = [(confidence[wrong].sort_values(ascending=False, kind="stable").index, "misclassified, most confident"),
                  (confidence.sort_values(ascending=False, kind="stable").index, "most confident"),
                  (confidence.sort_values(kind="stable").index, "least confident")]
    chosen: dict[int, str] = {}
    for rows, reason in groups:
        for row in [r for r in rows if r not in chosen][:quarter]:
            chosen[int(row)] = reason
    rest = [r for r in predictions.index if r not in chosen]
    for row in np.random.default_rng(seed).permutation(rest)[: max(0, count - len(chosen))]:
        chosen[int(row)] = "random"
    return list(chosen.items())[:count]


def _line(result: dict, explain, number: bool) -> str:
    f = result["faithfulness"]
    return (f"{result['examples']} examples; deleting the top-k attributed features lowers {'the prediction' if number else 'p(predicted)'} by {f['aopc_top_ig']:.4f} "
            f"on average (k = 1..{explain.faithfulness_k}), k random ones by {f['aopc_random']:.4f}; "
            f"mean |IG delta| {result['convergence_delta']['mean_abs']:.4f}")


def run(task, params, folder: Path) -> dict:
    explainer = task.explainer()  # Unsupported when the task has none: before loading anything
    label_map = read_json(paths.MODEL / "label_map.json")
    heads = Heads.of(label_map)
    model = task.models.load_trained(str(paths.MODEL), params.train.trust_remote_code).eval()
    processor = task.models.load_processor(str(paths.MODEL), params.train.trust_remote_code)
    test = pd.read_parquet(paths.PREPARED / "test.parquet")
    results, saved = {}, {}
    for head in each_head(label_map, test["label"], np.zeros((len(test), 0))):
        rows = test[head.labelled].reset_index(drop=True)
        predictions_file = head.folder(paths.EVALUATION) / "predictions.csv"
        number = head.target is not None or numbers.is_number(label_map)  # a numeric label, or a number head
        if number:  # the predicted value where a class's probability would be
            predictions = pd.read_csv(predictions_file).pipe(lambda frame: frame.assign(confidence=frame["predicted"]))
        else:
            predictions = read_labelled_csv(predictions_file)  # class names as written: "007", "9", "N/A"
        if predictions["id"].tolist() != rows["id"].tolist():
            raise UserError(f"{predictions_file} does not list the prepared test rows; rerun evaluate (dvc repro evaluate)")
        chosen = select_examples(predictions, params.explain.examples, params.explain.seed, number)
        viewed = model if head.name is None else HeadView(model, heads, head.name)  # several heads: one head's logits alone
        viewed = NumberView(viewed, head.target or label_map.get("target")) if number else viewed
        results[head.name], saved[head.name] = explainer.explain(params, task, viewed, processor, rows, predictions, chosen, head.classes)
        results[head.name] = {"model": str(paths.MODEL), **results[head.name]}
        print(f"explain{' ' + head.name if head.name else ''}: {_line(results[head.name], params.explain, number)}")
    write_json(folder / "attributions.json", saved[None] if None in saved else {"heads": saved})
    return results[None] if None in results else {"model": str(paths.MODEL), "heads": results}
