"""explain: why the fine-tuned model (models/model) predicted what it did, and whether that explanation is faithful.

The task's family explains (finetune/families/<family>/explain.py): classifiers' test examples through the task's
explainer (tokens, pixels), each attribution checked by deleting what it ranks highest against random deletions;
generative models' continuations of prompts, attributed to the prompt tokens. A task without an explainer writes the
reason as its result. Writes reports/explain.json and reports/explain/attributions.json (every score, for other tools).
"""
from __future__ import annotations

from functools import partial

from finetune import paths
from finetune.config.params import Params
from finetune.stage import main, produce
from finetune.tasks import get_task


def run(params: Params) -> dict:
    return produce("explain", partial(get_task(params.task).explain, params), (paths.EXPLAIN,), paths.EXPLAIN_METRICS)


if __name__ == "__main__":
    main(run, __doc__)
