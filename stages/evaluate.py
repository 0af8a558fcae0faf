"""evaluate: score the fine-tuned model (models/model) on the held-out test split, beside a baseline.

The task's family does the scoring (finetune/families/<family>/evaluate.py): classifiers against the majority class
(accuracy, macro F1, per class, confusion matrix, the most confident errors), generative models against the untouched
pretrained model (perplexity, next-token accuracy, generations); every score with its bootstrap 95 % interval and a
paired comparison. Writes reports/metrics.json and reports/evaluate/ (including this model's val and test predictions:
the primary model as an ensemble member).
"""
from __future__ import annotations

from functools import partial

from finetune import paths
from finetune.config.params import Params
from finetune.stage import main, produce
from finetune.tasks import get_task


def run(params: Params) -> dict:
    return produce("evaluate", partial(get_task(params.task).evaluate, params), (paths.EVALUATION,), paths.METRICS)


if __name__ == "__main__":
    main(run, __doc__)
