"""`python -m flows.search --worker`: processes started at the same moment share one study through search.storage
(an Optuna journal file) and split its plan: every planned trial runs once, none more, none twice. Bad storages are
refused naming search.storage, never echoing a password. (Workers sharing a SQLite file: tests/test_search.py.)"""
import contextlib
import itertools
import json
import subprocess
import sys

import optuna
import pytest

from finetune import search
from finetune.config.params import load_params
from finetune.errors import UserError
from tests.support.data import make_rows
from tests.support.params import tiny_params, write_params
from tests.support.repos import PROJECT, tool_env


def _write(root, tiny_model, **search_keys):
    if not (root / "data/raw/tiny.csv").exists():  # the trained project has its own
        (root / "data/raw").mkdir(parents=True)
        make_rows(30).to_csv(root / "data/raw/tiny.csv", index=False)
    params = tiny_params(tiny_model, train={"epochs": 1})
    params["search"] = {"study": "shared", "pruner": {"enabled": False}, **search_keys}
    write_params(root, params)


def _two_workers(root) -> list[dict]:
    """Two workers started at the same moment (each needs ~10 s of imports before it asks); each one's summary line."""
    env = {**tool_env(), "PYTHONPATH": str(PROJECT)}
    command = [sys.executable, "-m", "flows.search", "--worker"]
    workers = [subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [worker.communicate(timeout=240) for worker in workers]
    for worker, (out, err) in zip(workers, outputs):
        assert worker.returncode == 0, out[-2000:] + err[-3000:]
    return [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]


def test_two_workers_split_a_grid_through_a_journal_file(trained_workdir, tiny_model):
    space = {"train.learning_rate": {"choice": [3e-3]}, "train.strategy": {"choice": ["full", "lora"]}}
    _write(trained_workdir, tiny_model, method="grid", storage="journal:shared/search.journal", space=space)
    reports = _two_workers(trained_workdir)

    params = load_params(trained_workdir / "params.yaml")
    trials = optuna.load_study(study_name="shared", storage=search.storage(params.search)).get_trials()
    assert len(trials) == 2 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)  # 1 x 2 combinations, no more
    assert sorted(tuple(sorted(t.params.items())) for t in trials) == sorted(
        tuple(sorted(zip(space, combination))) for combination in itertools.product([3e-3], ["full", "lora"]))
    ran = [{int(number) for number in report["ran"]} for report in reports]
    assert ran[0] and ran[1] and not ran[0] & ran[1] and ran[0] | ran[1] == {0, 1}  # each worker trained one, never the same
    assert {t.user_attrs["worker"] for t in trials} == {report["worker"] for report in reports}
    summary = json.loads((trained_workdir / "reports/search/summary.json").read_text())
    assert summary["complete"] == 2  # the worker that told the last trial wrote after it, reading the whole study


@pytest.mark.parametrize("value", ["redis://localhost:6379", "postgres://user:s3cret@db/search", "sqlite:///:memory:", "journal:"])
def test_a_storage_optuna_cannot_share_is_refused_without_echoing_a_password(workdir, tiny_model, value):
    _write(workdir, tiny_model, method="random", storage=value)
    with pytest.raises(UserError, match="search.storage .* is not a storage this project opens; expected null") as error:
        load_params(workdir / "params.yaml")
    assert "s3cret" not in str(error.value)


@pytest.mark.parametrize("content, problem", [("not a journal\n", "its first line is not JSON"), ("sqlite", "its first line is not JSON"),
                                              ('{"study": 1}\n', "its first line is not a journal record"), ("[1]\n", "not a journal record"),
                                              (None, "not a regular file")])
def test_a_journal_storage_that_is_not_a_journal_is_one_line(workdir, tiny_model, content, problem):
    """It was Optuna's JSONDecodeError, UnicodeDecodeError or IsADirectoryError traceback, or (a file of one line: Optuna
    skips a torn last line) the file read as an empty journal and appended to."""
    _write(workdir, tiny_model, method="random", storage="journal:shared/search.journal")
    target = workdir / "shared/search.journal"
    target.parent.mkdir()
    if content == "sqlite":  # a SQLite database named as the journal
        import sqlite3

        with contextlib.closing(sqlite3.connect(target)) as database:
            database.execute("CREATE TABLE studies (name TEXT)")
            database.commit()
    else:
        target.mkdir() if content is None else target.write_text(content)
    with pytest.raises(UserError, match=f"search.storage journal:shared/search.journal: not an Optuna journal file \\(.*{problem}"):
        search.storage(load_params(workdir / "params.yaml").search)


def test_a_missing_database_driver_is_named(workdir, tiny_model, monkeypatch):
    _write(workdir, tiny_model, method="random", storage="postgresql://user@127.0.0.1:9/search", storage_password_env="SEARCH_PW")
    monkeypatch.setenv("SEARCH_PW", "s3cret")
    params = load_params(workdir / "params.yaml")
    with pytest.raises(UserError, match=r"search.storage postgresql://user@127.0.0.1:9/search needs a database driver .*No module named 'psycopg'") as error:
        search.storage(params.search)
    assert "s3cret" not in str(error.value)
