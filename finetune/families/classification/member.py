"""member for classifiers: train one ensemble member and save its class probabilities on val and test.

Two kinds:
- `finetune`: the train stage's recipe with the member's train/preprocess overrides (another seed, learning rate, model,
  preprocessing...). The prepared rows are featurized again with the member's own model and settings (augmented rows
  are rebuilt from the originals).
- the task's classical model (text: `tfidf`, TF-IDF + logistic regression; images: `pixels`, logistic regression on
  downscaled pixels), fitted on the same train split (CPU, seconds): the floor every fine-tune is judged against and a
  diverse member. Saved without pickle; the task's `classical.load(models/members/NAME)` brings it back. Several heads:
  one classical model per head in models/members/NAME/<head>/.
Writes the model into models/members/NAME, probabilities.parquet (each head's in <head>/ with several) and the training
curves (live/) into reports/members/NAME; the summary (scores, training time) goes to reports/member_summaries/NAME.json,
kept apart so timings never reach the ensemble's inputs.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from finetune import paths
from finetune.data import numbers
from finetune.data.heads import combined, each_head
from finetune.families.classification import probabilities
from finetune.io import read_json
from finetune.scoring import metrics, uncertainty
from finetune.scoring import numbers as number_scores

SPLITS = ("train", "val", "test")


def _finetune(task, params, name: str, prepared: dict[str, pd.DataFrame], label_map: dict, model_folder: Path,
              reports_folder: Path) -> tuple[dict, dict]:
    from finetune.training.fit import fit  # here, not at the top: a classical member needs no Trainer (seconds of imports)

    member_params = params.for_member(name)
    tables, own_map = task.features_for(member_params, prepared, label_map)
    summary = fit(task, member_params, tables, own_map, model_folder, reports_folder / "live", f"member {name}")
    summary["splits"] = {split: task.split_statistics(table) for split, table in tables.items()}  # its own features (e.g. truncation)
    model = task.models.load_trained(str(model_folder), member_params.train.trust_remote_code)
    processor = task.models.load_processor(str(model_folder), member_params.train.trust_remote_code)
    batch = member_params.train.eval_batch_size
    return {split: task.predict_proba(model, processor, tables[split], own_map, batch) for split in ("val", "test")}, summary


def _classical(task, params, name: str, prepared: dict[str, pd.DataFrame], label_map: dict, model_folder: Path) -> tuple[dict, dict]:
    """The task's classical model; with several heads one per head, fitted on the train rows that have its label (saved
    in models/members/NAME/<head>/), their probabilities side by side like a model of several heads'."""
    classical = task.classical
    train = prepared["train"][~prepared["train"]["augmented"]]
    settings = params.ensemble.members[name].classical_settings()
    start = time.perf_counter()
    models = {head.name: classical.fit(train[head.labelled].assign(label=head.actual), settings)
              for head in each_head(label_map, train["label"], np.zeros((len(train), 0)))}
    runtime = time.perf_counter() - start
    probs = {split: np.concatenate([model.predict_proba(prepared[split]) for model in models.values()], axis=1) for split in ("val", "test")}
    for head, model in models.items():
        target = model_folder / head if head else model_folder
        target.mkdir(exist_ok=True)
        classical.save(model, target)
    facts = {head: classical.facts(model) for head, model in models.items()}
    return probs, {"train_runtime_s": round(runtime, 1), **facts.get(None, {"heads": facts})}


def _scores(label_map: dict, part: probabilities.Split, interval: bool) -> dict:
    """Accuracy and macro F1 (with `interval`, its 95 % interval); several heads: each head's on its labelled rows, and the
    means; a numeric label's rmse, mae, r2 and spearman (finetune/scoring/numbers.py)."""
    def numeric(actual, predicted):
        return number_scores.scores(actual, predicted) | ({"ci95": number_scores.intervals(actual, {"m": predicted})["m"]} if interval else {})

    if numbers.is_number(label_map):
        return numeric(part.labels, part.probs[:, 0])

    def headline(head):
        if head.target:  # a number head
            return numeric(head.actual, head.probs[:, 0])
        scores = metrics.headline(head.actual, head.probs.argmax(axis=1))
        return scores | ({"ci95": uncertainty.interval(head.actual, head.probs.argmax(axis=1))} if interval else {})
    return combined({head.name: headline(head) for head in each_head(label_map, part.labels, part.probs)})


def run(task, params, name: str, model_folder: Path, reports_folder: Path) -> dict:
    label_map = read_json(paths.LABEL_MAP)
    prepared = {split: pd.read_parquet(paths.PREPARED / f"{split}.parquet") for split in SPLITS}
    kind = params.ensemble.members[name].kind
    if kind == "finetune":
        probs, summary = _finetune(task, params, name, prepared, label_map, model_folder, reports_folder)
    else:
        probs, summary = _classical(task, params, name, prepared, label_map, model_folder)

    splits = {split: probabilities.Split(prepared[split]["id"].to_numpy(), prepared[split]["label"].to_numpy(), probs[split])
              for split in ("val", "test")}
    scores = {split: _scores(label_map, part, interval=split == "test") for split, part in splits.items()}
    probabilities.save_heads(reports_folder / "probabilities.parquet", label_map, splits)
    metric, shown = ("rmse", "rmse") if numbers.is_number(label_map) else ("f1_macro", "macro F1")
    print(f"member {name} ({kind}): val {shown} {scores['val'][metric]:.4f}, test {shown} {scores['test'][metric]:.4f}")
    return {"kind": kind, **summary, **scores}
