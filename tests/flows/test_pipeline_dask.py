"""The pipeline flow on Dask (prefect-dask): independent stages on different worker processes, the same
dvc.lock as `dvc repro`; what travels to a worker pickles; a bad scheduler address stops the run first."""
import os
import pickle
import re
import types

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

from finetune.errors import UserError
from flows import pipeline
from tests.support.repos import copy_repo, run_flow, set_param, sh

# two cheap classical members that differ in their settings: independent stages of the real DAG
MEMBERS = {"words": {"kind": "tfidf", "tfidf": {"char_ngrams": None}},
           "chars": {"kind": "tfidf", "tfidf": {"word_ngrams": None, "C": 2.0}}}


def _members_project(snapshot, root):
    """The session's text project (ingest and preprocess already reproduced) cut to the stages members need."""
    copy_repo(snapshot, root)
    dag = yaml.safe_load((root / "dvc.yaml").read_text())
    dag["stages"] = {name: dag["stages"][name] for name in ("ingest", "preprocess", "member")}
    del dag["plots"]
    (root / "dvc.yaml").write_text(yaml.safe_dump(dag, sort_keys=False))
    set_param(root, "ensemble.members", MEMBERS)
    return root


def _members_lock(root) -> dict:
    stages = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    return {name: {kind: [e for e in stages[name][kind] if not e["path"].startswith("reports/member_summaries")]  # wall-clock times
                   for kind in ("deps", "outs")} for name in ("member@words", "member@chars")}


def test_dask_runs_independent_members_on_different_workers_and_writes_dvc_repro_s_lock(text_repo_snapshot, tmp_path, prefect_harness, caplog):
    snapshot, _ = text_repo_snapshot
    by_dvc, by_dask = _members_project(snapshot, tmp_path / "dvc"), _members_project(snapshot, tmp_path / "dask")
    threads = str(max(1, len(os.sched_getaffinity(0)) // 2))  # what the flow gives each of its 2 stages at once
    ran = sh(["dvc", "repro"], by_dvc, env={"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}).stdout
    assert re.findall(r"Running stage '([\w@-]+)'", ran) == ["member@words", "member@chars"]  # ingest, preprocess: cached

    states = run_flow(by_dask, concurrency=2, task_runner="dask")
    assert states == {"ingest": "Cached", "preprocess": "Cached", "member@words": "Completed", "member@chars": "Completed"}
    assert _members_lock(by_dask) == _members_lock(by_dvc)  # the same hashes, model weights included

    # where each member ran, as the flow run logged it (in the flow's process, whatever reached the API from workers)
    where = dict(re.findall(r"stage '(member@\w+)' ran on (\S+ pid \d+ \(Dask worker \d+ at tcp://[\d.:]+\))", caplog.text))
    assert set(where) == {"member@words", "member@chars"} and where["member@words"] != where["member@chars"]
    assert f" pid {os.getpid()} " not in " ".join(where.values())  # worker processes, not the flow's
    assert "Running stage 'member@words'" in caplog.text  # the stage's own output, relayed by the flow run

    with get_client(sync_client=True) as client:  # when the two ran, as the task runs' states recorded it
        named = TaskRunFilter(name=TaskRunFilterName(any_=list(where)))
        runs = {run.name: run for run in client.read_task_runs(task_run_filter=named)}
    words, chars = runs["member@words"], runs["member@chars"]
    overlap = (min(words.end_time, chars.end_time) - max(words.start_time, chars.start_time)).total_seconds()
    print(f"words {words.start_time:%H:%M:%S.%f}-{words.end_time:%H:%M:%S.%f}, chars {chars.start_time:%H:%M:%S.%f}-"
          f"{chars.end_time:%H:%M:%S.%f}: overlap {overlap:.2f} s")
    assert overlap > 0  # the two members ran at the same time


def test_resources_travel_to_workers_and_each_worker_owns_a_gpu(monkeypatch):
    resources = pickle.loads(pickle.dumps(pipeline.Resources(2)))  # what every Dask task receives
    gpu, env = resources.acquire()
    assert env["OMP_NUM_THREADS"] == str(max(1, len(os.sched_getaffinity(0)) // 2))
    resources.release(gpu)

    free = pipeline._free_gpus.__wrapped__  # the pool a process builds, once
    assert free((0, 1, 2)) == [0, 1, 2]  # threads: this process hands out every GPU
    monkeypatch.setattr(pipeline, "_dask_worker", lambda: types.SimpleNamespace(name=4))
    assert free((0, 1, 2)) == [1]  # local cluster worker 4: its own GPU, not GPU 0 like every other worker
    assert free(()) == []
    monkeypatch.setattr(pipeline, "_dask_worker", lambda: types.SimpleNamespace(name="gpu-box-1"))
    assert free((0, 1, 2)) == []  # a remote worker keeps its own CUDA_VISIBLE_DEVICES


def test_an_unreachable_scheduler_stops_the_run_before_any_work(tmp_path, prefect_harness):
    import dask

    sh(["git", "init", "-q"], tmp_path)
    sh(["dvc", "init", "-q"], tmp_path)
    (tmp_path / "params.yaml").write_text("{}\n")
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"a": {"cmd": "echo a > a.txt", "outs": ["a.txt"]}}}))
    with pytest.raises(UserError, match=r"dask_address 'no-port': no Dask scheduler answered \(missing port number"):
        run_flow(tmp_path, dask_address="no-port")
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}), \
            pytest.raises(UserError, match=r"dask_address 'tcp://127.0.0.1:9': no Dask scheduler answered \(Timed out"):
        run_flow(tmp_path, dask_address="tcp://127.0.0.1:9")
    assert not (tmp_path / "a.txt").exists()

    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: None}), pytest.raises(UserError, match="the workers report to the Prefect API"), \
            pipeline.stage_runner("dask", 2, "tcp://127.0.0.1:8786"):
        pass


def test_a_deployed_run_sends_its_stages_only_to_a_scheduler_the_pool_allows(monkeypatch, prefect_harness):
    """A run created through the API could name any dask_address: the stages (and the project's data) went to it."""
    monkeypatch.setenv("PREFECT__RUNTIME__DEPLOYMENT__ID", "6a1f3d3e-0d4e-4a8e-9a53-3b1c1ed2c0de")  # as inside a deployed run
    monkeypatch.setenv(pipeline.DASK_ALLOWED, "tcp://10.0.0.5:8786")
    with pytest.raises(UserError, match=r"dask_address 'tcp://evil:8786' is not a scheduler this deployment's work pool allows "
                                        r"\(tcp://10.0.0.5:8786\); deploy with --dask-address tcp://evil:8786"), \
            pipeline.stage_runner("dask", 2, "tcp://evil:8786"):
        pass
    monkeypatch.delenv(pipeline.DASK_ALLOWED)
    with pytest.raises(UserError, match=r"work pool allows \(none\)"), pipeline.stage_runner("dask", 2, "tcp://10.0.0.5:8786"):
        pass
