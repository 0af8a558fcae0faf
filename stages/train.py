"""train: fine-tune `train.model` on the prepared train split (finetune/training/fit.py: the Trainer with a strategy,
optimiser, schedule, early stopping, dvclive curves and resumable checkpoints), whatever the task: the task gives its
models (finetune/models/base.py).

Writes models/model (weights as safetensors, config, processor, label_map.json; LoRA: merged, plus adapter/) and
reports/train.json (with trainable vs total parameters and each group's learning rate).
"""
from __future__ import annotations

import pandas as pd

from finetune import paths
from finetune.config.params import Params
from finetune.io import read_json, write_json
from finetune.stage import main
from finetune.tasks import get_task
from finetune.training.fit import fit


def run(params: Params) -> dict:
    label_map = read_json(paths.LABEL_MAP)
    splits = {name: pd.read_parquet(paths.PREPARED / f"{name}.parquet") for name in ("train", "val")}
    summary = fit(get_task(params.task), params, splits, label_map, paths.MODEL, paths.TRAIN_LIVE, "train")
    write_json(paths.TRAIN_SUMMARY, summary)
    return summary


if __name__ == "__main__":
    main(run, __doc__)
