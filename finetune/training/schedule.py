"""How long to train, from the size of the train split: the same defaults must fit 1,800 images and 60,000.

Defaults tuned on a large set fail a small one: 3 epochs of 1,400 digit images are 66 optimizer steps, and the fine-tuned
EfficientNet scored 0.71 where logistic regression on the pixels scored 0.98 (issue 40). So with `train.epochs: null`
(the default) a run gets 3 epochs or, where those are fewer than `train.min_steps` optimizer steps, as many epochs as
reach them (at most MAX_EPOCHS); the best checkpoint on val is kept and early stopping decides the end:
- evaluations: every epoch (train.eval_steps null), or every k epochs where that would be more than MAX_EVALUATIONS;
- patience (train.early_stopping.patience null): none with FEW_EVALUATIONS or fewer (stopping could save one at most),
  else a quarter of the evaluations, at least 3. Not fewer: on a small val split the metric is coarse (1/180 on digits)
  and stalls while the decaying learning rate is still improving the model. bench/small_images.py on digits: stopping
  after 2 stalled evaluations ended at epoch 12 of 19 with 0.944 test accuracy; after 5 (this rule) the whole schedule
  ran, 0.989, above the pixels member's 0.972 (docs/benchmarks/small-images.md). And not in the first half of the
  schedule (`stop_after_step`): while the learning rate is high a small val split's metric jumps about; a focal-loss run
  on an imbalanced set (bench/imbalanced.py) stalled from epoch 1 to 4 and stopped there, at 0.62 test accuracy;
- warmup: train.warmup_ratio of the steps, so it grows with them.
A value the user sets (epochs, eval_steps, patience) is used as set. train.json `schedule` says what was chosen and why.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

BASE_EPOCHS = 3  # what a large set gets (every shipped config's split is large enough for min_steps: tests/training)
MAX_EPOCHS = 100  # a tiny set reaching min_steps still stops here
MAX_EVALUATIONS = 25  # beyond this an evaluation every epoch costs more than it tells
BASE_PATIENCE = 3
FEW_EVALUATIONS = 4  # stopping could save one of these at most, and the best checkpoint is kept anyway


@dataclass(frozen=True)
class Schedule:
    rows: int  # training items (augmented copies included; a text's every window under chunks)
    global_batch: int  # rows per optimizer step: batch x accumulation x processes
    steps_per_epoch: int
    epochs: float
    steps: int
    eval_steps: int | None  # None: every epoch
    evaluations: int
    patience: int  # 0: never stop early
    why: str
    stop_after_step: int = 0  # early stopping may end the run from this step on (0: any time)

    def as_dict(self) -> dict:
        return asdict(self)


def plan(train, rows: int, processes: int = 1, drop_last: bool = False) -> Schedule:
    """The schedule of a run of train (a Train section) on `rows` training rows in `processes` data-parallel processes;
    `drop_last`: the last incomplete batch of an epoch is skipped (models with BatchNorm, strategies.StrategyTrainer)."""
    global_batch = train.batch_size * train.gradient_accumulation_steps * processes
    per_epoch = max(1, (rows // global_batch) if drop_last else math.ceil(rows / global_batch))
    if train.epochs is not None:
        epochs, why = train.epochs, f"train.epochs {train.epochs:g} as set"
    else:
        epochs = min(MAX_EPOCHS, max(BASE_EPOCHS, math.ceil(train.min_steps / per_epoch)))
        why = (f"{BASE_EPOCHS} epochs (train.epochs null): {BASE_EPOCHS * per_epoch} steps reach train.min_steps {train.min_steps}"
               if epochs == BASE_EPOCHS else
               f"train.epochs null: {BASE_EPOCHS} epochs of {rows} rows in batches of {global_batch} would be {BASE_EPOCHS * per_epoch} "
               f"optimizer steps, under train.min_steps {train.min_steps}, so {epochs} epochs"
               + (f" (the most: {MAX_EPOCHS})" if epochs == MAX_EPOCHS else "") + "; the best checkpoint on val is kept")
    epochs = float(epochs)
    steps = max(1, math.ceil(epochs * per_epoch))
    eval_steps = train.eval_steps
    if eval_steps is None and train.epochs is None and epochs > MAX_EVALUATIONS:
        eval_steps = math.ceil(epochs / MAX_EVALUATIONS) * per_epoch  # every k epochs
        why += f"; evaluated every {eval_steps // per_epoch} epochs ({eval_steps} steps)"
    evaluations = max(1, steps // (eval_steps or per_epoch))
    patience = train.early_stopping.patience
    if patience is None and evaluations <= FEW_EVALUATIONS:
        patience = 0
        why += f"; every one of the {evaluations} evaluations run (patience null: too few to stop early)"
    elif patience is None:
        patience, stop_after = max(BASE_PATIENCE, math.ceil(evaluations / 4)), steps // 2
        why += (f"; early stopping after {patience} evaluations without improvement (patience null: {evaluations} evaluations), "
                f"not before step {stop_after} (half the schedule)")
        return Schedule(rows, global_batch, per_epoch, epochs, steps, eval_steps, evaluations, patience, why, stop_after)
    return Schedule(rows, global_batch, per_epoch, epochs, steps, eval_steps, evaluations, patience, why)
