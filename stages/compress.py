"""compress: smaller, faster copies of a fine-tuned model, each scored against it on the same test split.

The teacher is compress.teacher, or (best) the fine-tuned model (primary or a finetune member) that scores best on val.
The task's family runs compress.methods (finetune/families/<family>/compress.py): int8, pruning (with recovery training)
and a distilled student for classifiers (transformers and CNNs, each its own way), int8 and a distilled student for
generative models; a method that does not fit the model is recorded as skipped with the reason, a task with nothing to
compress writes that reason as its result. Writes models/compressed/ (one loadable folder per method), reports/compress/
and reports/compress.json.
"""
from __future__ import annotations

from functools import partial

from finetune import paths
from finetune.config.params import Params
from finetune.stage import main, produce
from finetune.tasks import get_task


def run(params: Params) -> dict:
    return produce("compress", partial(get_task(params.task).compress, params), (paths.COMPRESSED, paths.COMPRESS), paths.COMPRESS_METRICS)


if __name__ == "__main__":
    main(run, __doc__)
