"""finetune/search.py: what each sampler proposes, resuming, pruning with real tiny trainings, apply-best, workers
sharing a study (in threads here; as processes in tests/flows/test_search_workers.py)."""
import itertools
import json
from concurrent.futures import ThreadPoolExecutor

import optuna
import pandas as pd
import pytest

from finetune import search
from finetune.config.params import load_params
from finetune.errors import UserError
from finetune.io import read_json
from tests.support.data import make_rows
from tests.support.params import load, tiny_params, write_params


@pytest.fixture
def workdir(workdir):
    """The scratch project with the tiny data file params.yaml names (the stand-in trials never read it)."""
    (workdir / "data/raw").mkdir(parents=True, exist_ok=True)
    if not (workdir / "data/raw/tiny.csv").exists():
        make_rows(30).to_csv(workdir / "data/raw/tiny.csv", index=False)
    return workdir


def _params(tiny_model, **search_keys):
    params = tiny_params(tiny_model)
    params["search"] = {"study": "s", **search_keys}  # replaced whole: the tiny default space is not merged in
    return load(params)


def _scored_by_params(params, calls):
    """A stand-in trainer: the 'metric' is a known function of the trial's values (no training)."""
    def runner(number):
        values = optuna.load_study(study_name=params.search.study, storage=search.storage_url(params.search)).trials[number].params
        calls.append((number, values))
        return {"state": "complete", "value": -abs(values["train.learning_rate"] - 2e-3), "seconds": 0.0}
    return runner


def test_grid_runs_the_exact_product_once_each(workdir, tiny_model):
    space = {"train.learning_rate": {"choice": [1e-3, 2e-3, 3e-3]}, "train.strategy": {"choice": ["full", "lora"]},
             "train.epochs": {"integer": [1, 2]}}
    params = _params(tiny_model, method="grid", trials=1, space=space)
    calls = []
    study = search.run_search(params, _scored_by_params(params, calls), log=lambda _: None)
    seen = sorted(tuple(sorted(values.items())) for _, values in calls)
    product = sorted(tuple(sorted(zip(space, combo))) for combo in itertools.product([1e-3, 2e-3, 3e-3], ["full", "lora"], [1, 2]))
    assert seen == product  # 12 = 3 x 2 x 2, trials: 1 ignored by grid
    assert study.best_params["train.learning_rate"] == 2e-3
    table = pd.read_csv(workdir / "reports/search/trials.csv")
    assert len(table) == 12 and set(table["state"]) == {"complete"}


def test_a_choice_of_lists_is_searched_to_the_end_and_left_out_of_the_importance_by_name(workdir, tiny_model):
    # configs/image.yaml searches crop ranges: Optuna's importance evaluator could not hash them and the search died after
    # its second trial (TypeError: unhashable type: 'list')
    space = {"train.learning_rate": {"log_uniform": [1e-3, 3e-3]},
             "preprocess.augment.copies": {"choice": [0, 1]}, "preprocess.augment.ops": {"choice": [["delete"], ["swap"]]}}
    params = _params(tiny_model, method="random", trials=4, space=space)
    calls = []
    search.run_search(params, _scored_by_params(params, calls), log=lambda _: None)
    summary = read_json(workdir / "reports/search/summary.json")
    assert len(calls) == 4 and summary["complete"] == 4
    assert set(summary["importance"]) <= {"train.learning_rate", "preprocess.augment.copies"} and summary["importance"]
    assert list(summary["importance_not_ranked"]) == ["preprocess.augment.ops"]


def _random_sequence(tiny_model, study, seed):
    params = _params(tiny_model, method="random", trials=5, seed=seed, study=study,
                     space={"train.learning_rate": {"log_uniform": [1e-5, 1e-2]}, "train.lora.rank": {"integer": [2, 16]}})
    calls = []
    search.run_search(params, _scored_by_params(params, calls), log=lambda _: None)
    return [values for _, values in calls]


def test_random_search_is_seeded(workdir, tiny_model):
    first, again, other = (_random_sequence(tiny_model, name, seed) for name, seed in (("a", 3), ("b", 3), ("c", 4)))
    assert first == again and first != other
    assert len({v["train.learning_rate"] for v in first}) == 5
    assert all(1e-5 <= v["train.learning_rate"] <= 1e-2 and 2 <= v["train.lora.rank"] <= 16 for v in first)


def test_an_interrupted_search_resumes_without_repeating_finished_trials(workdir, tiny_model):
    params = _params(tiny_model, method="random", trials=5, space={"train.learning_rate": {"log_uniform": [1e-5, 1e-2]}})
    calls = []
    scored = _scored_by_params(params, calls)

    def killed_at_third(number):
        if number == 2:
            raise KeyboardInterrupt  # Ctrl-C (or a kill) in the middle of trial 2
        return scored(number)

    with pytest.raises(KeyboardInterrupt):
        search.run_search(params, killed_at_third, log=lambda _: None)
    finished = [number for number, _ in calls]
    interrupted = optuna.load_study(study_name="s", storage=search.storage_url(params.search)).trials[2]
    assert finished == [0, 1] and interrupted.state == optuna.trial.TrialState.RUNNING

    calls.clear()
    study = search.run_search(params, scored, log=lambda _: None)
    rerun = [number for number, _ in calls]
    assert not set(rerun) & {0, 1}  # finished trials are not trained again
    assert calls[0][1] == interrupted.params  # the interrupted trial runs first, with the same values
    assert len(search.counted_trials(study)) == 5 and len(rerun) == 3
    summary = read_json(workdir / "reports/search/summary.json")
    assert summary["complete"] == 5 and summary["failed"] == 1  # the interrupted attempt stays visible


def test_a_stored_study_with_another_space_is_not_resumed(workdir, tiny_model):
    params = _params(tiny_model, method="random", trials=1)
    search.run_search(params, _scored_by_params(params, []), log=lambda _: None)
    other = _params(tiny_model, method="random", trials=1, space={"train.learning_rate": {"log_uniform": [1e-4, 1e-2]}})
    with pytest.raises(UserError, match="study 's' .* was run with another search.method, metric or space"):
        search.run_search(other, _scored_by_params(other, []), log=lambda _: None)


def test_bayesian_search_with_the_pruner_trains_real_trials(trained_workdir, tiny_model):
    # 1e-7 cannot learn in the tiny budget, 3e-3 can: once one trial completed, the median pruner stops the slow ones.
    params = _params(tiny_model, method="bayesian", trials=5, seed=2,
                     pruner={"enabled": True, "startup_trials": 1, "warmup_evaluations": 1},
                     space={"train.learning_rate": {"choice": [3e-3, 1e-7]}})
    study = search.run_search(params, lambda number: search.run_trial(params, number), log=lambda _: None)
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 5 and all(t.state.is_finished() for t in trials)
    epochs = int(params.train.epochs)
    for t in trials:
        assert t.intermediate_values  # every evaluation reached the pruner
        if t.state == optuna.trial.TrialState.PRUNED:
            assert t.params["train.learning_rate"] == 1e-7 and 2 <= len(t.intermediate_values) < epochs
        else:
            assert len(t.intermediate_values) == epochs
    assert any(t.state == optuna.trial.TrialState.PRUNED for t in trials)
    best = read_json(trained_workdir / "reports/search/summary.json")["best"]
    assert best["params"] == {"train.learning_rate": 3e-3} and best["value"] > 0.8
    assert (trained_workdir / "reports/search/history.png").stat().st_size > 1000


def test_apply_best_writes_the_values_and_keeps_the_comments(workdir, tiny_model):
    params_dict = tiny_params(tiny_model)
    params_dict["search"] = {"study": "s", "method": "grid", "space": {"train.learning_rate": {"choice": [1e-3, 2e-3]}}}
    write_params(workdir, params_dict, header="# my notes\n")
    (workdir / "params.yaml").write_text((workdir / "params.yaml").read_text().replace("  seed: 3\n", "  seed: 3  # keep this seed\n"))
    params = load_params(workdir / "params.yaml")
    search.run_search(params, _scored_by_params(params, []), log=lambda _: None)
    assert search.apply_best(workdir / "params.yaml") == {"train.learning_rate": 2e-3}
    text = (workdir / "params.yaml").read_text()
    assert "# my notes" in text and "# keep this seed" in text
    assert load_params(workdir / "params.yaml").train.learning_rate == 2e-3


def test_apply_best_writes_only_searched_keys_and_never_trust_remote_code(workdir, tiny_model):
    """summary.json is shared through git: a crafted one wrote trust_remote_code, data.source and search.storage into
    params.yaml before (and `make best` then ran dvc repro)."""
    params_dict = tiny_params(tiny_model)
    params_dict["search"] = {"study": "s", "method": "grid", "space": {"train.learning_rate": {"choice": [1e-3, 2e-3]},
                                                                      "train.trust_remote_code": {"choice": [False, True]}}}
    write_params(workdir, params_dict)
    before = (workdir / "params.yaml").read_text()
    summary = workdir / "reports/search/summary.json"
    summary.parent.mkdir(parents=True)
    summary.write_text(json.dumps({"best": {"params": {"train.learning_rate": 2e-3, "data.source": "/etc/passwd"}}}))
    with pytest.raises(UserError, match=r"values set \['data.source'\], outside search.space"):
        search.apply_best(workdir / "params.yaml")
    summary.write_text(json.dumps({"best": {"params": {"train.trust_remote_code": True}}}))  # even a searched key
    with pytest.raises(UserError, match="trust_remote_code runs code shipped with a model; turn it on in params.yaml itself"):
        search.apply_best(workdir / "params.yaml")
    assert (workdir / "params.yaml").read_text() == before  # nothing written


def test_a_trial_whose_stored_values_leave_the_space_is_refused_before_training(workdir, tiny_model):
    """A shared study storage is data: a trial recorded there with trust_remote_code (or any key outside search.space)
    trained with it before."""
    from optuna.distributions import CategoricalDistribution

    write_params(workdir, tiny_params(tiny_model))
    params = load_params(workdir / "params.yaml")
    study = optuna.create_study(study_name=params.search.study, storage=search.storage(params.search), direction="maximize")
    study.add_trial(optuna.trial.create_trial(params={"train.trust_remote_code": True}, state=optuna.trial.TrialState.RUNNING,
                                              distributions={"train.trust_remote_code": CategoricalDistribution([False, True])}))
    with pytest.raises(UserError, match=r"trial 0 of study 'tiny' sets \['train.trust_remote_code'\], outside search.space"):
        search.run_trial(params, 0)


def test_apply_best_without_a_search_says_so(workdir, tiny_model):
    write_params(workdir, tiny_params(tiny_model))
    with pytest.raises(UserError, match="reports/search/summary.json has no completed trial yet"):
        search.apply_best(workdir / "params.yaml")


def test_a_worker_leaves_running_trials_alone_and_the_search_requeues_them(workdir, tiny_model):
    params = _params(tiny_model, method="random", trials=3, space={"train.learning_rate": {"log_uniform": [1e-5, 1e-2]}})
    store = search.storage(params.search)
    taken = search.claim(search.open_study(params.search, store), store, params.search)  # another worker's trial, still running
    calls = []
    study = search.run_search(params, _scored_by_params(params, calls), log=lambda _: None, worker=True)
    assert sorted(number for number, _ in calls) == [1, 2]  # the two nobody had taken, not the running one
    assert study.trials[taken.number].state == optuna.trial.TrialState.RUNNING and len(study.trials) == 3

    calls.clear()
    study = search.run_search(params, _scored_by_params(params, calls), log=lambda _: None)  # the owner, once no worker runs
    assert calls == [(3, taken.params)] and study.trials[3].user_attrs["retry_of"] == 0
    assert len(search.counted_trials(study)) == 3


def test_workers_on_one_sqlite_file_take_each_planned_trial_once(workdir, tiny_model, monkeypatch):
    # Python's sqlite3 opens no transaction for a SELECT: without search.storage's BEGIN IMMEDIATE, two connections
    # both read a trial as WAITING and both take it (3 runs of this test in 4 failed so). Each thread's run_search
    # opens its own storage, so they race through SQLite's locks as processes do; results files are beside the point.
    monkeypatch.setattr(search, "write_results", lambda study, search: None)
    params = _params(tiny_model, method="random", trials=40, storage="sqlite:///shared/search.db",
                     space={"train.learning_rate": {"log_uniform": [1e-5, 1e-2]}})
    search.open_study(params.search, search.storage(params.search))  # planned: both start taking trials at once
    calls = {name: [] for name in "ab"}
    with ThreadPoolExecutor(2) as pool:
        for worker in [pool.submit(search.run_search, params, _scored_by_params(params, calls[name]), lambda _: None, True) for name in calls]:
            worker.result()
    ran = [[number for number, _ in calls[name]] for name in calls]
    assert ran[0] and ran[1] and sorted(ran[0] + ran[1]) == list(range(40))  # each trial by one worker, exactly the plan
    study = optuna.load_study(study_name="s", storage=search.storage(params.search))
    assert len(study.trials) == 40 and all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
