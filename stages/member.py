"""member: train one ensemble member and save its predictions on val and test.

dvc.yaml runs this once per entry of `ensemble.members` (foreach), so adding a member trains only that member and
removing one retrains nothing. The task's family trains it (finetune/families/<family>/member.py): a `finetune` member is
the train stage's recipe with the member's train/preprocess overrides; a classifier's classical member (text: tfidf,
images: pixels) is fitted in seconds. Writes models/members/NAME, reports/members/NAME (its predictions, the ensemble's
input, and its training curves) and reports/member_summaries/NAME.json (scores and training time: kept apart so timings
never reach the ensemble's inputs).
"""
from __future__ import annotations

from functools import partial

from finetune import paths
from finetune.config.params import Params
from finetune.errors import UserError
from finetune.stage import main, produce
from finetune.tasks import get_task


def run(params: Params, name: str) -> dict:
    if name not in params.ensemble.members:
        raise UserError(f"no member {name!r} in ensemble.members (members: {sorted(params.ensemble.members)})")
    verb = partial(get_task(params.task).member, params, name)
    return produce(f"member {name}", verb, (paths.MEMBER_MODELS / name, paths.MEMBER_REPORTS / name), paths.MEMBER_SUMMARIES / f"{name}.json")


if __name__ == "__main__":
    main(run, __doc__, item="member")
