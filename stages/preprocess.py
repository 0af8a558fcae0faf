"""preprocess: clean the ingested rows, split them train/val/test and featurize every split, through the task.

The task's family does the work (finetune/families/<family>/preprocess.py): classifiers drop unusable, conflicting and
duplicate inputs, split stratified by label (or by the data's own split) and featurize for the train stage's model;
generative models split by document and pack blocks. Writes data/prepared/{train,val,test}.parquet + label_map.json,
the dropped rows with their reason in data/quarantine/preprocess.csv, and reports/preprocess.json.
"""
from __future__ import annotations

import pandas as pd

from finetune import paths
from finetune.config.params import Params
from finetune.io import write_json, write_outputs, write_table
from finetune.stage import main
from finetune.tasks import get_task


def run(params: Params) -> dict:
    task = get_task(params.task)
    frame = pd.read_parquet(paths.INGESTED)
    with write_outputs(paths.PREPARED, paths.QUARANTINE / "preprocess.csv", paths.PREPROCESS_SUMMARY) as (folder, quarantine, report):
        folder.mkdir()
        summary, dropped = task.preprocess(params, frame, folder)
        write_table(quarantine, dropped)
        write_json(report, summary)
    return summary


if __name__ == "__main__":
    main(run, __doc__)
