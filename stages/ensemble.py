"""ensemble: combine the members' saved predictions; no member is retrained here (seconds).

Members: the train stage's model ("primary", when ensemble.include_primary) and every entry of ensemble.members. The
task's family combines them (finetune/families/<family>/ensemble.py): classifiers' class probabilities, calibrated and
combined by every method (best member, votes, weights and stacking fitted on val only; `auto` picks by cross-fitted val
scores); generative models' next-token distributions mixed with weights fitted on val. Writes reports/ensemble.json,
reports/ensemble/ and models/ensemble/ (what `finetune predict --model models/ensemble` applies to new rows).
"""
from __future__ import annotations

from functools import partial

from finetune import paths
from finetune.config.params import Params
from finetune.stage import main, produce
from finetune.tasks import get_task


def run(params: Params) -> dict:
    return produce("ensemble", partial(get_task(params.task).ensemble, params), (paths.ENSEMBLE, paths.ENSEMBLE_MODEL), paths.ENSEMBLE_METRICS)


if __name__ == "__main__":
    main(run, __doc__)
