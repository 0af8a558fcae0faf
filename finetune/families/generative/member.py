"""member for generative models: a fine-tuned member (another seed, learning rate, strategy...) trained by the same `fit`
on the same blocks (members must share the tokenizer: their distributions are mixed token by token, ensemble.py),
scored like the primary model. Writes the model, and its val and test token log-probabilities (the ensemble's input).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from finetune import paths
from finetune.families.generative import scoring
from finetune.io import read_json


def run(task, params, name: str, model_folder: Path, reports_folder: Path) -> dict:
    from finetune.training.fit import fit

    member_params = params.for_member(name)
    prepared = {split: pd.read_parquet(paths.PREPARED / f"{split}.parquet") for split in ("train", "val", "test")}
    splits, layout = task.features_for(member_params, prepared, read_json(paths.LABEL_MAP))
    summary = fit(task, member_params, splits, layout, model_folder, reports_folder / "live", f"member {name}")
    model = task.models.load_trained(str(model_folder), member_params.train.trust_remote_code)
    log_probs, scores = scoring.score(model, {split: scoring.load_blocks(split) for split in ("val", "test")}, params.train.eval_batch_size)
    scores["test"]["ci95"] = scoring.interval(log_probs["test"])
    scoring.save_logprobs(reports_folder / scoring.LOGPROBS, log_probs)
    print(f"member {name}: val perplexity {scores['val']['perplexity']:.2f}, test perplexity {scores['test']['perplexity']:.2f}")
    return {"kind": "finetune", **summary, **scores}
