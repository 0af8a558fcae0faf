"""member: train one ensemble member and save its class probabilities on val and test.

dvc.yaml runs this once per entry of `ensemble.members` (foreach), so adding a member trains only
that member and removing one retrains nothing. Two kinds:
- `finetune`: the train stage's recipe with the member's train/preprocess overrides (another seed,
  learning rate, model directory, max_length, augmentation...). The prepared splits are re-tokenized
  with the member's own model and settings (augmented rows are rebuilt from the originals).
- `tfidf`: TF-IDF n-grams + logistic regression on the same train split (CPU, seconds): the floor
  every fine-tune is judged against and a diverse member. Saved as JSON + safetensors (no pickle);
  `get_task(task).load_classical(models/members/NAME)` brings it back.
Writes models/members/NAME, reports/members/NAME/{probabilities.parquet, live/} and
reports/member_summaries/NAME.json (scores, training time: kept apart so timings never reach the ensemble's inputs).
"""
from __future__ import annotations

import time

import pandas as pd

from finetune import metrics, paths, probabilities
from finetune.cli import main
from finetune.errors import UserError
from finetune.io import atomic_path, read_json, write_json
from finetune.params import Params
from finetune.sources import LABEL, TEXT
from finetune.tasks import get_task
from stages.preprocess import feature_columns, featurize
from stages.train import fit

SPLITS = ("train", "val", "test")


def retokenized(params: Params, prepared: dict[str, pd.DataFrame], labels: list[str]) -> tuple[dict, dict]:
    """(featurized splits, label map): the prepared rows re-tokenized with `params`' model and
    preprocess settings, augmented rows rebuilt from the originals. Members and search trials use it."""
    originals = {split: frame.loc[~frame["augmented"], ["id", TEXT, LABEL]].assign(**{LABEL: lambda f: [labels[i] for i in f[LABEL]]})
                 for split, frame in prepared.items()}
    tables = featurize(params, originals, labels)
    return tables, {"labels": labels, "features": feature_columns(tables["train"])}


def member_tables(params: Params, name: str, prepared: dict[str, pd.DataFrame], labels: list[str]) -> tuple[Params, dict, dict]:
    """(the member's params, its own featurized splits, its label map)."""
    member_params = params.for_member(name)
    return member_params, *retokenized(member_params, prepared, labels)


def _finetune(params: Params, name: str, prepared: dict[str, pd.DataFrame], labels: list[str]) -> tuple[dict, dict]:
    member_params, tables, label_map = member_tables(params, name, prepared, labels)
    model_dir = paths.MEMBER_MODELS / name
    summary = fit(member_params, tables, label_map, model_dir, paths.MEMBER_REPORTS / name / "live", f"member {name}")
    summary["truncated_rows"] = {split: int(table["truncated"].sum()) for split, table in tables.items()}
    task = get_task(params.task)
    model = task.load_trained(str(model_dir), member_params.train.trust_remote_code)
    processor = task.load_processor(str(model_dir), member_params.train.trust_remote_code)
    batch = member_params.train.eval_batch_size
    probs = {split: task.predict_proba(model, processor, tables[split], label_map["features"], batch) for split in ("val", "test")}
    return probs, summary


def _tfidf(params: Params, name: str, prepared: dict[str, pd.DataFrame]) -> tuple[dict, dict]:
    train = prepared["train"][~prepared["train"]["augmented"]]
    start = time.perf_counter()
    model = get_task(params.task).fit_classical(train[TEXT], train[LABEL].to_numpy(), params.ensemble.members[name].tfidf)
    runtime = time.perf_counter() - start
    probs = {split: model.predict_proba(prepared[split][TEXT].tolist()) for split in ("val", "test")}
    with atomic_path(paths.MEMBER_MODELS / name) as folder:
        folder.mkdir()
        get_task(params.task).save_classical(model, folder)
    return probs, {"train_runtime_s": round(runtime, 1), "features": len(model[0].get_feature_names_out())}


def run(params: Params, name: str) -> dict:
    if name not in params.ensemble.members:
        raise UserError(f"no member {name!r} in ensemble.members (members: {sorted(params.ensemble.members)})")
    labels = read_json(paths.LABEL_MAP)["labels"]
    prepared = {split: pd.read_parquet(paths.PREPARED / f"{split}.parquet") for split in SPLITS}
    kind = params.ensemble.members[name].kind
    probs, summary = _finetune(params, name, prepared, labels) if kind == "finetune" else _tfidf(params, name, prepared)

    splits = {split: probabilities.Split(prepared[split]["id"].to_numpy(), prepared[split][LABEL].to_numpy(), probs[split])
              for split in ("val", "test")}
    scores = {split: metrics.headline(part.labels, part.probs.argmax(axis=1)) for split, part in splits.items()}
    summary = {"kind": kind, **summary, **scores}
    probabilities.save(paths.MEMBER_REPORTS / name / "probabilities.parquet", labels, splits)
    write_json(paths.MEMBER_SUMMARIES / f"{name}.json", summary)
    print(f"member {name} ({kind}): val macro F1 {scores['val']['f1_macro']:.4f}, test macro F1 {scores['test']['f1_macro']:.4f}")
    return summary


if __name__ == "__main__":
    main(run, __doc__, item="member")
