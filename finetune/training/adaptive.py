"""train.strategy adaptive: which layer groups train follows how training goes, decided at each evaluation, for any
model whose layer groups finetune/models/anatomy.py finds (transformers, CNNs, ViTs).

- unfreeze_on_plateau: the head trains first (the body frozen, as gradual_unfreeze starts). When the val metric the
  run keeps its best checkpoint by has not improved (by more than `min_delta`) for `patience` evaluations, the next
  group down opens (ULMFiT's order, triggered by the data instead of a fixed epoch count), the input group last. A
  newly opened group's learning rate ramps up from 0 over `rewarm_steps` optimizer steps (null: the run's warm-up),
  so pretrained weights do not meet the full rate mid-run; the other groups keep the schedule's rate.
- freeze_converged (AutoFreeze, Liu et al. 2021): every group trains first. At each evaluation, the mean gradient norm
  of each trainable group over the steps since the previous evaluation is compared with the one before; the lowest
  trainable group freezes when it moved by less than `threshold` (relative), and the groups above it with it while
  they also did: bottom-up only, so every frozen group lies below every trained one and costs no backward time
  (autograd computes no gradient for a frozen weight, and none below the lowest trained group). The head never
  freezes. With `check_every` the comparison runs every that many optimizer steps instead, from the gradient norms
  alone: no evaluation is needed to decide, so the run can evaluate once per epoch (on the image data a 2,000-image
  evaluation cost more than freezing saved; docs/benchmarks/strategies-search.md). Limit: frozen groups' outputs are
  not cached (AutoFreeze does that when the data order allows; the Trainer reshuffles and augments every epoch, so it
  would rarely apply here).

Each evaluation (and each check_every decision, without a metric) adds a row to the timeline (train.json
parameters.adaptive, the report's Training section): step, epoch, the val metric, the trainable groups and why they
changed. The timeline, the open groups, the best metric, the stall count, the re-warm starts and the gradient norms
are the callback's state in every checkpoint, so a killed run resumes exactly (the Trainer rebuilds the callback from
`state()`: its arguments are plain values, the model comes with each event). Early stopping counts the same
evaluations: give it a patience above `patience` x the groups to open, or it can end the run with groups still closed.
"""
from __future__ import annotations

import math

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from finetune.training.strategies import layer_groups, set_trainable


class AdaptiveLayers(TrainerCallback, ExportableState):
    def __init__(self, policy: str, patience: int = 1, min_delta: float = 0.0, rewarm_steps: int | None = None, threshold: float = 0.1,
                 batchnorm: str = "train", check_every: int | None = None, max_frozen: float | None = None):
        self.policy, self.patience, self.min_delta, self.rewarm_steps = policy, patience, min_delta, rewarm_steps
        self.threshold, self.batchnorm, self.check_every, self.max_frozen = threshold, batchnorm, check_every, max_frozen
        self.trainable: list[str] | None = None  # open groups, bottom-up; None until the first event sees the model
        self.best: float | None = None
        self.stalled = 0
        self.opened_at: dict[str, int] = {}  # group -> the step its learning rate started ramping up (while it ramps)
        self.norm_sums: dict[str, float] = {}
        self.norm_steps = 0
        self.last_norms: dict[str, float] = {}
        self.timeline: list[dict] = []
        self._applied = False  # not state: a resumed run's new callback applies the restored groups at its first step
        self._model = None
        self._ended = False  # the evaluations after training (the restored best model) change nothing

    def state(self) -> dict:
        return {"args": {"policy": self.policy, "patience": self.patience, "min_delta": self.min_delta, "rewarm_steps": self.rewarm_steps,
                         "threshold": self.threshold, "batchnorm": self.batchnorm,
                         "check_every": self.check_every, "max_frozen": self.max_frozen},
                "attributes": {"trainable": self.trainable, "best": self.best, "stalled": self.stalled, "opened_at": self.opened_at,
                               "norm_sums": self.norm_sums, "norm_steps": self.norm_steps, "last_norms": self.last_norms,
                               "timeline": self.timeline}}

    def _apply(self, model) -> dict:
        self._model = model
        groups = layer_groups(model)
        if self.trainable is None:
            self.trainable = ["head"] if self.policy == "unfreeze_on_plateau" else list(groups)
        if not self._applied:
            set_trainable(model, groups, [name for name in groups if name not in self.trainable], False, self.batchnorm)
            set_trainable(model, groups, self.trainable, True, self.batchnorm)
            self._applied = True
        return groups

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._apply(model)

    def on_step_begin(self, args, state, control, model=None, optimizer=None, lr_scheduler=None, **kwargs):
        self._apply(model)
        if not self.opened_at:
            return
        steps = self.rewarm_steps if self.rewarm_steps is not None else args.get_warmup_steps(state.max_steps)
        # the scheduler set every group's rate at the last step; the opened groups get a share of theirs
        for group, rate in zip(optimizer.param_groups, lr_scheduler.get_last_lr()):
            if group.get("group") in self.opened_at:
                group["lr"] = rate * min(1.0, (state.global_step - self.opened_at[group["group"]] + 1) / max(steps, 1))
        self.opened_at = {name: step for name, step in self.opened_at.items() if state.global_step - step + 1 < steps}

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if self.policy != "freeze_converged":
            return
        for name, params in self._apply(model).items():
            grads = [p.grad for _, p in params if p.grad is not None]
            if name in self.trainable and grads:
                self.norm_sums[name] = self.norm_sums.get(name, 0.0) + math.sqrt(sum(float(torch.sum(g.float() ** 2)) for g in grads))
        self.norm_steps += 1

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.policy == "freeze_converged" and self.check_every and state.global_step % self.check_every == 0:
            self._record(state, self._freeze(self._apply(model)))

    def on_train_end(self, args, state, control, **kwargs):
        self._ended = True

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        if self._ended:
            return
        groups = self._apply(model)
        metric = args.metric_for_best_model if args.metric_for_best_model.startswith("eval_") else f"eval_{args.metric_for_best_model}"
        value = metrics.get(metric)
        if self.policy == "unfreeze_on_plateau":
            change = self._unfreeze(groups, value, args.greater_is_better, state.global_step)
        else:  # with check_every, freeze_converged decided at its own steps: an evaluation only records the metric
            change = "" if self.check_every else self._freeze(groups)
        self._record(state, change, {metric.removeprefix("eval_"): value})

    def _record(self, state, change: str, metric: dict | None = None):
        if change:
            print(f"adaptive: step {state.global_step}: {change}")
        self.timeline.append({"step": state.global_step, "epoch": round(state.epoch or 0, 4), **(metric or {}),
                              "trainable": list(self.trainable), "change": change})

    def _unfreeze(self, groups: dict, value: float | None, greater: bool, step: int) -> str:
        if value is not None and (self.best is None or (value - self.best if greater else self.best - value) > self.min_delta):
            self.best, self.stalled = value, 0
            return ""
        self.stalled += 1
        closed = [name for name in reversed(groups) if name not in self.trainable]  # top-down
        if self.stalled < self.patience or not closed:
            return ""
        self.stalled = 0
        opened = closed[0]
        set_trainable(self._model, groups, [opened], True, self.batchnorm)
        self.trainable = [name for name in groups if name in self.trainable or name == opened]
        self.opened_at[opened] = step
        return f"opened {opened}: the val metric did not improve for {self.patience} evaluation(s) (best {self.best:.4g})"

    def _freeze(self, groups: dict) -> str:
        norms = {name: total / self.norm_steps for name, total in self.norm_sums.items()} if self.norm_steps else {}
        body = [name for name in groups if name != "head"]  # bottom-up; the head never freezes
        frozen, moves = [], []
        for name in body[:len(body) if self.max_frozen is None else math.floor(self.max_frozen * len(body))]:
            if name not in self.trainable:
                continue
            previous, current = self.last_norms.get(name), norms.get(name)
            if not previous or current is None or abs(current - previous) / previous >= self.threshold:
                break
            frozen.append(name)
            moves.append(f"{name} ({abs(current - previous) / previous:.3f})")
        if frozen:
            set_trainable(self._model, groups, frozen, False, self.batchnorm)
            self.trainable = [name for name in self.trainable if name not in frozen]
        self.last_norms = {name: norm for name, norm in norms.items() if name in self.trainable}
        self.norm_sums, self.norm_steps = {}, 0
        since = f"{self.check_every} steps before" if self.check_every else "the last evaluation"
        return f"froze {', '.join(moves)}: its mean gradient norm moved less than {self.threshold:g} (relative) since {since}" \
            if frozen else ""
