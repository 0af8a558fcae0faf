"""How long a run trains follows from its train split (finetune/training/schedule.py): a small split gets enough epochs for
train.min_steps, evaluations and patience scale with them, a value the user sets wins, and every shipped config's
recorded run (docs/results/) gets the very schedule it ran with, so their numbers stand."""
import json
from types import SimpleNamespace

import pytest
import yaml

from finetune import paths
from finetune.config.params import load_params
from finetune.config.sections import Train
from finetune.training.schedule import MAX_EPOCHS, plan
from tests.support.data import make_rows
from tests.support.params import load, run_stages, tiny_params
from tests.support.repos import PROJECT


def _train(**values) -> Train:
    return Train(model="builtin:x", **values)


def test_a_small_split_gets_epochs_enough_for_min_steps_and_early_stopping():
    """The issue's digits: 1,437 train images in batches of 64, the last incomplete one dropped (BatchNorm), were 66 steps."""
    schedule = plan(_train(batch_size=64), rows=1437, drop_last=True)
    assert (schedule.steps_per_epoch, schedule.epochs, schedule.steps) == (22, 19, 418)
    assert schedule.eval_steps is None and schedule.evaluations == 19 and schedule.patience == 5
    assert "1437 rows in batches of 64 would be 66 optimizer steps, under train.min_steps 400, so 19 epochs" in schedule.why
    assert plan(_train(batch_size=64, min_steps=100), rows=1437, drop_last=True).patience == 3  # 5 evaluations: at least 3


def test_a_large_split_keeps_three_epochs_and_every_evaluation():
    schedule = plan(_train(batch_size=64), rows=16_000)
    assert (schedule.epochs, schedule.steps, schedule.evaluations, schedule.patience) == (3, 750, 3, 0)
    assert schedule.why.startswith("3 epochs (train.epochs null): 750 steps reach train.min_steps 400")


def test_a_tiny_split_stops_at_the_most_epochs_and_evaluates_every_few():
    schedule = plan(_train(batch_size=64, gradient_accumulation_steps=2), rows=100, processes=2)
    assert schedule.global_batch == 256 and schedule.steps_per_epoch == 1
    assert schedule.epochs == MAX_EPOCHS and schedule.eval_steps == 4 and schedule.evaluations == 25 and schedule.patience == 7


def test_what_the_user_sets_wins():
    schedule = plan(_train(batch_size=64, epochs=2, eval_steps=5, early_stopping={"patience": 0}), rows=1437, drop_last=True)
    assert (schedule.epochs, schedule.steps, schedule.eval_steps, schedule.patience) == (2, 44, 5, 0)
    assert schedule.why == "train.epochs 2 as set"
    assert plan(_train(batch_size=64, min_steps=0), rows=1437).epochs == 3


@pytest.mark.parametrize("name", sorted(path.name for path in (PROJECT / "docs/results").iterdir() if path.is_dir()))
def test_every_shipped_config_gets_the_schedule_of_its_recorded_run(name, monkeypatch):
    recorded = PROJECT / "docs/results" / name
    monkeypatch.chdir(PROJECT)
    train = load_params(f"configs/{name}.yaml").train
    ran = json.loads((recorded / "reports/train.json").read_text())
    split = json.loads((recorded / "reports/preprocess.json").read_text())["splits"]["train"]
    examples = split.get("rows") or split.get("blocks_kept") or split["clips"]  # classifiers' rows, a generative task's blocks, speech's clips
    schedule = plan(train, examples, drop_last="batchnorm" in ran["parameters"])
    assert not ran["stopped_early"] and schedule.steps == ran["steps"] and schedule.epochs == ran["epochs"]
    patience = yaml.safe_load((recorded / "params.yaml").read_text())["train"]["early_stopping"]["patience"]
    if patience is None:  # null: derived from the number of evaluations, as the run wrote down
        patience = ran["schedule"]["patience"]
    # the same patience, or one that could never stop it before its last evaluation
    assert schedule.patience == patience or (schedule.patience == 0 and patience >= schedule.evaluations)


def test_the_train_stage_runs_and_reports_the_schedule(workdir, tiny_model):
    (workdir / "data/raw").mkdir(parents=True)
    make_rows(60).to_csv(workdir / "data/raw/tiny.csv", index=False)
    params = load(tiny_params(tiny_model, train={"epochs": None, "min_steps": 30, "batch_size": 8}))
    run_stages("ingest", "preprocess", "train", params=params)
    summary = json.loads(paths.TRAIN_SUMMARY.read_text())
    schedule = summary["schedule"]
    assert (schedule["rows"], schedule["steps_per_epoch"], schedule["epochs"], schedule["steps"]) == (36, 5, 6, 30)
    assert summary["steps"] == 30 or (summary["stopped_early"] and summary["steps"] % 5 == 0)


def test_early_stopping_waits_for_half_the_schedule_when_its_patience_was_derived():
    from transformers import TrainerControl

    from finetune.training.fit import EarlyStoppingAfter

    assert plan(_train(batch_size=64), rows=1437, drop_last=True).stop_after_step == 418 // 2
    assert plan(_train(batch_size=64, early_stopping={"patience": 2}), rows=1437, drop_last=True).stop_after_step == 0  # as set
    stopper, args = EarlyStoppingAfter(early_stopping_patience=1, stop_after_step=10), SimpleNamespace(metric_for_best_model="f1_macro",
                                                                                                         greater_is_better=True)
    control, state = TrainerControl(), SimpleNamespace(best_metric=0.9, global_step=4)
    stopper.on_evaluate(args, state, control, {"eval_f1_macro": 0.5})
    assert not control.should_training_stop and stopper.early_stopping_patience_counter == 1  # stalled, counted, not stopped
    state.global_step = 10
    stopper.on_evaluate(args, state, control, {"eval_f1_macro": 0.5})
    assert control.should_training_stop
    control, state.global_step = TrainerControl(should_training_stop=True), 2  # a search pruner's stop stands
    stopper.on_evaluate(args, state, control, {"eval_f1_macro": 0.5})
    assert control.should_training_stop
    assert EarlyStoppingAfter.from_state(stopper.state()).stop_after_step == 10  # a resumed run keeps it
