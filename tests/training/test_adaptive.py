"""train.strategy adaptive (finetune/training/adaptive.py) through the real fit on the tiny model: what the timeline
says happened is checked against the metric it logged, the weights every epoch and the optimizer's learning rates."""
import shutil

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from finetune import paths
from finetune.errors import UserError
from tests.support.params import tiny_params
from tests.training.test_strategies import _train

GROUP_PREFIX = {"embeddings": "embeddings.", "layer.0": "encoder.layer.0.", "layer.1": "encoder.layer.1."}


class Watch(TrainerCallback):
    """The encoder's weights at each evaluation and every param group's learning rate at each optimizer step."""

    def __init__(self):
        self.weights, self.rates = [], []

    def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        self.rates.append((state.global_step, {group["group"]: group["lr"] for group in optimizer.param_groups if group["params"]}))

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        self.weights.append({name.removeprefix("bert."): p.detach().clone() for name, p in model.state_dict().items()})


class Crash(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise RuntimeError("killed")


def _params(tiny_model, **adaptive):
    # a learning rate that leaves the tiny model's val metric flat for a while: plateaus to react to
    return tiny_params(tiny_model, train={"epochs": 6, "strategy": "adaptive", "learning_rate": 1e-4, "warmup_ratio": 0.0,
                                          "adaptive": adaptive, "early_stopping": {"patience": 0}})


def _group_moved(before: dict, after: dict, group: str) -> bool:
    return any(not torch.equal(tensor, after[name]) for name, tensor in before.items() if name.startswith(GROUP_PREFIX[group]))


def test_unfreeze_on_plateau_opens_the_next_group_down_exactly_when_the_val_metric_stalls(trained_workdir, tiny_model):
    watch = Watch()
    summary, _ = _train(_params(tiny_model, policy="unfreeze_on_plateau", patience=1, rewarm_steps=4), [watch])
    timeline = summary["parameters"]["adaptive"]["timeline"]
    assert len(timeline) == 6 and len(watch.weights) == 7  # and the restored best model's evaluation, which changes nothing

    best, trainable = None, ["head"]
    for row in timeline:  # the rule, replayed from the logged metric
        value = row["f1_macro"]
        if best is None or value > best:  # min_delta 0
            best, expected = value, ""
        else:
            closed = [g for g in ("layer.1", "layer.0", "embeddings") if g not in trainable]
            expected = closed[0] if closed else ""
            trainable = trainable + [expected] if expected else trainable
        assert row["change"].startswith(f"opened {expected}:") if expected else row["change"] == "", row
        assert sorted(row["trainable"]) == sorted(trainable), row
    assert len(trainable) > 2, timeline  # the flat metric opened at least two groups

    pretrained = load_file(tiny_model / "model.safetensors")
    for i, weights in enumerate(watch.weights[:6]):  # a group's weights move once the evaluation before opened it, never before
        open_before = timeline[i - 1]["trainable"] if i else ["head"]
        assert all(_group_moved(pretrained, weights, group) == (group in open_before) for group in GROUP_PREFIX), (i, open_before)

    # re-warm: the opened group's rate is 1/4, 2/4, 3/4 of the head's for its first steps, then the same
    opened_step = next(row["step"] for row in timeline if row["change"])
    opened = next(row["change"].split()[1].rstrip(":") for row in timeline if row["change"])
    ratios = [rates[opened] / rates["head"] for step, rates in watch.rates if step >= opened_step][:5]
    assert ratios == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0]), watch.rates


def test_freeze_converged_freezes_bottom_up_and_frozen_groups_stop_moving(trained_workdir, tiny_model):
    watch = Watch()
    summary, _ = _train(_params(tiny_model, policy="freeze_converged", threshold=5.0), [watch])
    timeline = summary["parameters"]["adaptive"]["timeline"]
    assert timeline[0]["change"] == "" and len(timeline[0]["trainable"]) == 4  # no earlier norms to compare at the first
    frozen_at = {}
    for i, row in enumerate(timeline):
        for group in GROUP_PREFIX:
            if group not in row["trainable"]:
                frozen_at.setdefault(group, i)
    assert frozen_at, timeline  # a threshold of 500 % freezes at the second evaluation
    order = ["embeddings", "layer.0", "layer.1"]
    assert [g for g in order if g in frozen_at] == order[:len(frozen_at)]  # a bottom-up prefix
    assert all(frozen_at[a] <= frozen_at[b] for a, b in zip(order, order[1:]) if b in frozen_at)
    for group, i in frozen_at.items():  # from the evaluation that froze it, its weights never change again
        assert timeline[i]["change"].startswith("froze ") and group in timeline[i]["change"]
        for later in watch.weights[i + 1:len(timeline)]:  # (the last evaluation is the restored best model's)
            assert not _group_moved(watch.weights[i], later, group), group
    assert "head" in timeline[-1]["trainable"]


def test_max_frozen_stops_freezing_at_its_share_of_the_body_and_the_groups_above_keep_training(trained_workdir, tiny_model):
    watch = Watch()  # a threshold of 500 % would freeze all three body groups at the second evaluation (the test above)
    summary, _ = _train(_params(tiny_model, policy="freeze_converged", threshold=5.0, max_frozen=0.4), [watch])
    timeline = summary["parameters"]["adaptive"]["timeline"]
    changed = [i for i, row in enumerate(timeline) if row["change"]]
    assert len(changed) == 1 and timeline[changed[0]]["change"].startswith("froze embeddings ("), timeline  # floor(0.4 x 3) = 1
    assert timeline[-1]["trainable"] == ["layer.0", "layer.1", "head"]
    after = watch.weights[changed[0]:len(timeline)]  # from the freezing evaluation on (the last is the restored best model's)
    assert len(after) >= 3
    for group in ("layer.0", "layer.1"):  # still trained between every two evaluations
        assert all(_group_moved(a, b, group) for a, b in zip(after, after[1:])), group
    assert not any(_group_moved(after[0], later, "embeddings") for later in after[1:])


def test_a_run_killed_while_a_group_warms_up_resumes_to_the_same_weights_and_timeline(trained_workdir, tiny_model):
    params = tiny_params(tiny_model, train={"epochs": 4, "strategy": "adaptive", "learning_rate": 1e-4, "warmup_ratio": 0.0,
                                            "eval_steps": 3, "adaptive": {"patience": 1, "rewarm_steps": 6},
                                            "early_stopping": {"patience": 0}})
    whole, whole_weights = _train(params)
    opened = [row for row in whole["parameters"]["adaptive"]["timeline"] if row["change"]]
    assert opened, whole["parameters"]["adaptive"]
    crash_at = opened[0]["step"] + 4  # after the checkpoint that recorded the opening, mid re-warm (6 steps)
    assert crash_at < whole["steps"]
    shutil.rmtree(paths.MODEL)
    with pytest.raises(RuntimeError, match="killed"):
        _train(params, [Crash(crash_at)])
    resumed, resumed_weights = _train(params)
    assert resumed["resumed"] and not whole["resumed"]
    assert resumed["parameters"]["adaptive"] == whole["parameters"]["adaptive"]
    for key, tensor in whole_weights.items():
        assert torch.equal(tensor, resumed_weights[key]), key


class StepWeights(TrainerCallback):
    """The encoder's weights after every optimizer step."""

    def __init__(self):
        self.weights = {}

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.weights[state.global_step] = {name: p.detach().clone() for name, p in model.state_dict().items() if name.startswith("bert.")}


def test_freeze_converged_with_check_every_decides_between_evaluations_and_resumes_exactly(trained_workdir, tiny_model):
    params = tiny_params(tiny_model, train={"epochs": 3, "strategy": "adaptive", "learning_rate": 1e-4, "warmup_ratio": 0.0,
                                            "adaptive": {"policy": "freeze_converged", "threshold": 5.0, "check_every": 2},
                                            "early_stopping": {"patience": 0}})
    watch = StepWeights()
    whole, whole_weights = _train(params, [watch])
    timeline = whole["parameters"]["adaptive"]["timeline"]
    checks = [row for row in timeline if "f1_macro" not in row]
    evaluations = [row for row in timeline if "f1_macro" in row]
    assert [row["step"] for row in checks] == list(range(2, whole["steps"] + 1, 2))  # every 2 steps, not at evaluations
    assert len(evaluations) == 3 and all(row["change"] == "" for row in evaluations)  # one per epoch, deciding nothing
    assert checks[0]["change"] == ""  # no earlier norms to compare at the first check
    froze = next(row for row in checks if row["change"])
    assert froze["step"] == 4 and froze["change"].startswith("froze embeddings") and "2 steps before" in froze["change"]
    for group in ("embeddings",):  # from the step that froze it, its weights never change again
        prefix = "bert." + GROUP_PREFIX[group]
        frozen = {k: v for k, v in watch.weights[froze["step"]].items() if k.startswith(prefix)}
        assert all(torch.equal(v, watch.weights[whole["steps"]][k]) for k, v in frozen.items())

    crash_at = evaluations[0]["step"] + 3  # past the first checkpoint, which holds the frozen groups and the norms so far
    assert froze["step"] < crash_at < whole["steps"]
    shutil.rmtree(paths.MODEL)
    with pytest.raises(RuntimeError, match="killed"):
        _train(params, [Crash(crash_at)])
    resumed, resumed_weights = _train(params)
    assert resumed["resumed"] and resumed["parameters"]["adaptive"] == whole["parameters"]["adaptive"]
    for key, tensor in whole_weights.items():
        assert torch.equal(tensor, resumed_weights[key]), key


def test_adaptive_needs_the_models_layers_and_one_process(workdir, tiny_model):
    from tests.support.params import load

    with pytest.raises(UserError, match="processes 2 with strategy adaptive"):
        load(tiny_params(tiny_model, train={"strategy": "adaptive", "processes": 2}))
