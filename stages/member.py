"""member: train one ensemble member and save its class probabilities on val and test.

dvc.yaml runs this once per entry of `ensemble.members` (foreach), so adding a member trains only
that member and removing one retrains nothing. Two kinds:
- `finetune`: the train stage's recipe with the member's train/preprocess overrides (another seed,
  learning rate, model, preprocessing...). The prepared rows are featurized again with the member's
  own model and settings (augmented rows are rebuilt from the originals).
- the task's classical model (text: `tfidf`, TF-IDF + logistic regression; images: `pixels`, logistic
  regression on downscaled pixels), fitted on the same train split (CPU, seconds): the floor every
  fine-tune is judged against and a diverse member. Saved without pickle; the task's
  `classical.load(models/members/NAME)` brings it back.
Writes models/members/NAME, reports/members/NAME/{probabilities.parquet, live/} and
reports/member_summaries/NAME.json (scores, training time: kept apart so timings never reach the ensemble's inputs).
"""
from __future__ import annotations

import time

import pandas as pd

from finetune import metrics, paths, probabilities, uncertainty
from finetune.cli import main
from finetune.errors import UserError
from finetune.featurize import member_tables
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


def _classical(params: Params, name: str, prepared: dict[str, pd.DataFrame]) -> tuple[dict, dict]:
    classical = get_task(params.task).classical
    train = prepared["train"][~prepared["train"]["augmented"]]
    start = time.perf_counter()
    model = classical.fit(train, params.ensemble.members[name].classical_settings())
    runtime = time.perf_counter() - start
    probs = {split: model.predict_proba(prepared[split]) for split in ("val", "test")}
    with atomic_path(paths.MEMBER_MODELS / name) as folder:
        folder.mkdir()
        classical.save(model, folder)
    return probs, {"train_runtime_s": round(runtime, 1), **classical.facts(model)}


def run(params: Params, name: str) -> dict:
    if verb := get_task(params.task).own_verb("member"):  # a task whose member is another verb (a causal LM's)
        return verb(params, name)
    if name not in params.ensemble.members:
        raise UserError(f"no member {name!r} in ensemble.members (members: {sorted(params.ensemble.members)})")
    labels = read_json(paths.LABEL_MAP)["labels"]
    prepared = {split: pd.read_parquet(paths.PREPARED / f"{split}.parquet") for split in SPLITS}
    kind = params.ensemble.members[name].kind
    probs, summary = _finetune(params, name, prepared, labels) if kind == "finetune" else _classical(params, name, prepared)

    splits = {split: probabilities.Split(prepared[split]["id"].to_numpy(), prepared[split]["label"].to_numpy(), probs[split])
              for split in ("val", "test")}
    scores = {split: metrics.headline(part.labels, part.probs.argmax(axis=1)) for split, part in splits.items()}
    scores["test"]["ci95"] = uncertainty.interval(splits["test"].labels, splits["test"].probs.argmax(axis=1))
    summary = {"kind": kind, **summary, **scores}
    probabilities.save(paths.MEMBER_REPORTS / name / "probabilities.parquet", labels, splits)
    write_json(paths.MEMBER_SUMMARIES / f"{name}.json", summary)
    print(f"member {name} ({kind}): val macro F1 {scores['val']['f1_macro']:.4f}, test macro F1 {scores['test']['f1_macro']:.4f}")
    return summary


if __name__ == "__main__":
    main(run, __doc__, item="member")
