"""member: train one ensemble member and save its class probabilities on val and test.

dvc.yaml runs this once per entry of `ensemble.members` (foreach), so adding a member trains only
that member and removing one retrains nothing. Two kinds:
- `finetune`: the train stage's recipe with the member's train/preprocess overrides (another seed,
  learning rate, model, preprocessing...). The prepared rows are featurized again with the member's
  own model and settings (augmented rows are rebuilt from the originals).
- the task's classical model (text: `tfidf`, TF-IDF + logistic regression; images: `pixels`, logistic
  regression on downscaled pixels), fitted on the same train split (CPU, seconds): the floor every
  fine-tune is judged against and a diverse member. Saved without pickle; the task's
  `classical.load(models/members/NAME)` brings it back. Several tasks (data.label_columns): one classical model per
  head in models/members/NAME/<task>/, and each head's probabilities in reports/members/NAME/<task>/.
Writes models/members/NAME, reports/members/NAME/{probabilities.parquet, live/} and
reports/member_summaries/NAME.json (scores, training time: kept apart so timings never reach the ensemble's inputs).
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd

from finetune import metrics, paths, probabilities, uncertainty
from finetune.cli import main
from finetune.errors import UserError
from finetune.featurize import member_tables
from finetune.heads import IGNORE, Heads, names
from finetune.io import atomic_path, read_json, write_json
from finetune.params import Params
from finetune.tasks import get_task

SPLITS = ("train", "val", "test")


def _finetune(params: Params, name: str, prepared: dict[str, pd.DataFrame], labels: list[str]) -> tuple[dict, dict]:
    from finetune.training import fit  # here, not at the top: a classical member needs no Trainer (seconds of imports)

    member_params, tables, label_map = member_tables(params, name, prepared, labels)
    model_dir = paths.MEMBER_MODELS / name
    summary = fit(member_params, tables, label_map, model_dir, paths.MEMBER_REPORTS / name / "live", f"member {name}")
    task = get_task(params.task)
    summary["splits"] = {split: task.split_statistics(table) for split, table in tables.items()}  # its own features (e.g. truncation)
    model = task.load_trained(str(model_dir), member_params.train.trust_remote_code)
    processor = task.load_processor(str(model_dir), member_params.train.trust_remote_code)
    batch = member_params.train.eval_batch_size
    probs = {split: task.predict_proba(model, processor, tables[split], label_map, batch) for split in ("val", "test")}
    return probs, summary


def _classical(params: Params, name: str, prepared: dict[str, pd.DataFrame], heads: Heads) -> tuple[dict, dict]:
    """The task's classical model; with several tasks one per head, fitted on the train rows that have its label
    (saved in models/members/NAME/<task>/), their probabilities side by side like a multi-head model's."""
    classical = get_task(params.task).classical
    train = prepared["train"][~prepared["train"]["augmented"]]
    settings = params.ensemble.members[name].classical_settings()
    start = time.perf_counter()
    if heads.multi:
        labels = heads.matrix(train["label"])
        models = {task: classical.fit(train[labels[:, i] != IGNORE].assign(label=labels[labels[:, i] != IGNORE, i]), settings)
                  for i, task in enumerate(heads.tasks)}
    else:
        models = {None: classical.fit(train, settings)}
    runtime = time.perf_counter() - start
    probs = {split: np.concatenate([model.predict_proba(prepared[split]) for model in models.values()], axis=1) for split in ("val", "test")}
    with atomic_path(paths.MEMBER_MODELS / name) as folder:
        folder.mkdir()
        for task, model in models.items():
            target = folder / task if task else folder
            target.mkdir(exist_ok=True)
            classical.save(model, target)
    facts = {task: classical.facts(model) for task, model in models.items()}
    return probs, {"train_runtime_s": round(runtime, 1), **facts.get(None, {"heads": facts})}


def _scores(heads: Heads, part: probabilities.Split, interval: bool) -> dict:
    """Accuracy and macro F1 (with `interval`, its 95 % interval); several tasks: each head's on its labelled rows, and the means."""
    def headline(labels, probs):
        scores = metrics.headline(labels, probs.argmax(axis=1))
        return scores | ({"ci95": uncertainty.interval(labels, probs.argmax(axis=1))} if interval else {})
    if not heads.multi:
        return headline(part.labels, part.probs)
    labels = heads.matrix(part.labels)
    per_head = {task: headline(labels[labels[:, i] != IGNORE, i], columns[labels[:, i] != IGNORE])
                for i, (task, columns) in enumerate(heads.columns(part.probs).items())}
    return {name: float(np.mean([s[name] for s in per_head.values()])) for name in ("accuracy", "f1_macro")} | {"tasks": per_head}


def run(params: Params, name: str) -> dict:
    if verb := get_task(params.task).own_verb("member"):  # a task whose member is another verb (a causal LM's)
        return verb(params, name)
    if name not in params.ensemble.members:
        raise UserError(f"no member {name!r} in ensemble.members (members: {sorted(params.ensemble.members)})")
    label_map = read_json(paths.LABEL_MAP)
    heads = Heads.of(label_map)
    prepared = {split: pd.read_parquet(paths.PREPARED / f"{split}.parquet") for split in SPLITS}
    kind = params.ensemble.members[name].kind
    if kind == "finetune":
        probs, summary = _finetune(params, name, prepared, names(label_map))
    else:
        probs, summary = _classical(params, name, prepared, heads)

    splits = {split: probabilities.Split(prepared[split]["id"].to_numpy(), prepared[split]["label"].to_numpy(), probs[split])
              for split in ("val", "test")}
    scores = {split: _scores(heads, part, interval=split == "test") for split, part in splits.items()}
    summary = {"kind": kind, **summary, **scores}
    probabilities.save_heads(paths.MEMBER_REPORTS / name / "probabilities.parquet", label_map, splits)
    write_json(paths.MEMBER_SUMMARIES / f"{name}.json", summary)
    print(f"member {name} ({kind}): val macro F1 {scores['val']['f1_macro']:.4f}, test macro F1 {scores['test']['f1_macro']:.4f}")
    return summary


if __name__ == "__main__":
    main(run, __doc__, item="member")
