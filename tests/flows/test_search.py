"""`python -m flows.search`: trials as Prefect tasks in their own processes, concurrently; bad spaces refused first."""
import re

import pandas as pd
import pytest
from prefect.client.orchestration import get_client

from flows import search as search_flow
from tests.support.params import tiny_params, write_params
from tests.support.repos import PROJECT


def _write(root, tiny_model, **search_keys):
    params = tiny_params(tiny_model, train={"epochs": 3})
    params["search"] = {"study": "flow", **search_keys}
    write_params(root, params)


def test_the_flow_runs_trials_concurrently_as_tasks_and_reports_them(trained_workdir, tiny_model, prefect_harness, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(PROJECT))  # trials are `python -m flows.search --trial N` in this scratch project
    _write(trained_workdir, tiny_model, method="random", trials=2, concurrency=2,
           space={"train.learning_rate": {"log_uniform": [1e-3, 1e-2]}, "train.strategy": {"choice": ["full", "lora"]}})
    summary = search_flow.search_flow("params.yaml")

    trials = pd.read_csv(trained_workdir / "reports/search/trials.csv")
    assert len(trials) == 2 and set(trials["state"]) == {"complete"} and (trials["seconds"] > 0).all()
    assert summary["best"]["value"] == trials["value"].max()
    with get_client(sync_client=True) as client:
        runs = {run.name: run for run in client.read_task_runs() if run.name.startswith("trial-")}
        artifact = {a.key: a for a in client.read_artifacts()}["search"]
    assert {"trial-0", "trial-1"} <= set(runs)
    first, second = runs["trial-0"], runs["trial-1"]
    assert first.start_time < second.end_time and second.start_time < first.end_time  # the two ran at the same time
    assert "Best trial" in artifact.data and "| trial | state | value |" in artifact.data


@pytest.mark.parametrize("space, message", [
    ({"train.freeze_layers": {"integer": [0, 5]}, "train.strategy": {"choice": ["partial"]}}, "train.freeze_layers is 5 but .* has only 2 layers"),
    ({"train.lora.target_modules": {"choice": [["query"], ["q_proj"]]}, "train.strategy": {"choice": ["lora"]}},
     r"train.lora.target_modules \['q_proj'\] are not modules"),
])
def test_values_the_model_cannot_take_are_refused_before_any_trial(trained_workdir, tiny_model, capsys, space, message):
    _write(trained_workdir, tiny_model, method="grid", space=space)
    with pytest.raises(SystemExit) as exit_info:
        search_flow.main(["--params", "params.yaml"])
    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (trained_workdir / ".cache/search").exists() and not (trained_workdir / "reports/search").exists()


def test_a_failed_trials_error_is_shown_without_the_interpreters_shutdown_noise():
    noise = ("Exception ignored in: <function FilePackIndex.__del__ at 0x7f>\nTraceback (most recent call last):\n"
             '  File "dulwich/pack.py", line 4730, in __del__\nImportError: sys.meta_path is None, Python is likely shutting down\n')
    stderr = ("Traceback (most recent call last):\n" + "".join(f'  File "x.py", line {i}, in f\n' for i in range(20))
              + "AttributeError: 'ImageClassifier' object has no attribute 'config'\n" + noise * 4)
    shown = search_flow.failure(stderr)
    assert shown.endswith("AttributeError: 'ImageClassifier' object has no attribute 'config'") and "meta_path" not in shown
    assert len(shown.splitlines()) == 15
