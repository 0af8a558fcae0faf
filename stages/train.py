"""train: fine-tune `train.model` on the prepared train split (finetune/training.py: the Trainer with
a strategy, optimiser, schedule, early stopping, dvclive curves and resumable checkpoints).

Writes models/model (weights as safetensors, config, processor, label_map.json; LoRA: merged, plus
adapter/) and reports/train.json (with trainable vs total parameters and each group's learning rate).
"""
from __future__ import annotations

import pandas as pd

from finetune import paths
from finetune.cli import main
from finetune.io import read_json, write_json
from finetune.params import Params
from finetune.training import fit


def run(params: Params) -> dict:
    label_map = read_json(paths.LABEL_MAP)
    splits = {name: pd.read_parquet(paths.PREPARED / f"{name}.parquet") for name in ("train", "val")}
    summary = fit(params, splits, label_map, paths.MODEL, paths.TRAIN_LIVE, "train")
    write_json(paths.TRAIN_SUMMARY, summary)
    return summary


if __name__ == "__main__":
    main(run, __doc__)
