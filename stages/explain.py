"""explain: why the fine-tuned model (models/model) predicted what it did, and whether that is faithful.

Examples (explain.examples, from the test split): a quarter each of the most confident errors, the
most confident predictions and the least confident ones, the rest drawn at random (explain.seed).
The task's explainer does the rest (text: finetune/attribution.py's TokenExplainer: Integrated
Gradients, gradient x input and attention per token, deletion faithfulness against random deletions,
the global view per class, and the compressed models' drift from their teacher; images:
finetune/pixel_attribution.py's PixelExplainer: the same per pixel, with occlusion, Grad-CAM and attention
rollout, deleting image patches). A task without an
explainer writes a result that says so (`unavailable`: the reason) (the report shows the reason), never a crash of the stage.
Several tasks (data.label_columns): each head is explained on the test rows that have its label, through a view of the
model that returns that head's logits alone (finetune/head_loss.py HeadView); each head's under `tasks`.
Writes reports/explain.json (metrics) and reports/explain/attributions.json (every score, for other tools).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from finetune import attribution, paths
from finetune.cli import main
from finetune.errors import UserError
from finetune.head_loss import HeadView
from finetune.heads import IGNORE, Heads
from finetune.io import read_json, write_json, write_outputs
from finetune.params import Params
from finetune.tasks import get_task


def select_examples(predictions: pd.DataFrame, count: int, seed: int) -> list[tuple[int, str]]:
    """(row position in the test split, why it was chosen), most telling first."""
    confidence = predictions["confidence"]
    wrong = predictions.index[predictions["actual"] != predictions["predicted"]]
    quarter = max(1, count // 4)
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


def _explain(params: Params, task, model, processor, test: pd.DataFrame, predictions_file, labels: list[str]) -> tuple[dict, dict]:
    """(metrics, attributions) of the model's predictions on these test rows (those evaluate listed in predictions_file)."""
    predictions = pd.read_csv(predictions_file)
    if predictions["id"].tolist() != test["id"].tolist():
        raise UserError(f"{predictions_file} does not list the prepared test rows; rerun evaluate (dvc repro evaluate)")
    chosen = select_examples(predictions, params.explain.examples, params.explain.seed)
    explained, saved = attribution.EXPLAINERS[task.explainer]().explain(params, task, model, processor, test, predictions, chosen, labels)
    return {"model": str(paths.MODEL), **explained}, saved


def _line(result: dict, explain) -> str:
    f = result["faithfulness"]
    return (f"{result['examples']} examples; deleting the top-k attributed features lowers p(predicted) by {f['aopc_top_ig']:.4f} "
            f"on average (k = 1..{explain.faithfulness_k}), k random ones by {f['aopc_random']:.4f}; "
            f"mean |IG delta| {result['convergence_delta']['mean_abs']:.4f}")


def run(params: Params) -> dict:
    if verb := get_task(params.task).own_verb("explain"):  # a task whose explain is another verb (a causal LM's)
        return verb(params)
    task = get_task(params.task)
    label_map = read_json(paths.MODEL / "label_map.json")
    heads = Heads.of(label_map)
    if task.explainer is None:
        result, saved = {"model": str(paths.MODEL), "unavailable": f"the {params.task} task has no explainer yet"}, {"examples": []}
    else:
        model = task.load_trained(str(paths.MODEL), params.train.trust_remote_code).eval()
        processor = task.load_processor(str(paths.MODEL), params.train.trust_remote_code)
        test = pd.read_parquet(paths.PREPARED / "test.parquet")
        if not heads.multi:
            result, saved = _explain(params, task, model, processor, test, paths.EVALUATION / "predictions.csv", label_map["labels"])
        else:  # several tasks: each head explained on the test rows that have its label, through a view of that head alone
            labels = heads.matrix(test["label"])
            per_head = {head: _explain(params, task, HeadView(model, heads, head), processor,
                                       test[labels[:, i] != IGNORE].reset_index(drop=True), paths.EVALUATION / head / "predictions.csv",
                                       heads.tasks[head]) for i, head in enumerate(heads.tasks)}
            result = {"model": str(paths.MODEL), "tasks": {head: r for head, (r, _) in per_head.items()}}
            saved = {"tasks": {head: s for head, (_, s) in per_head.items()}}
    with write_outputs(paths.EXPLAIN, paths.EXPLAIN_METRICS) as (folder, metrics_file):
        folder.mkdir()
        write_json(folder / "attributions.json", saved)
        write_json(metrics_file, result)
    if "unavailable" in result:
        print(f"explain: nothing explained: {result['unavailable']}")
    else:
        for head, scores in result.get("tasks", {"": result}).items():
            print(f"explain{' ' + head if head else ''}: {_line(scores, params.explain)}")
    return result


if __name__ == "__main__":
    main(run, __doc__)
