"""The Prefect flow runs dvc.yaml's DAG through DVC: same lock, same cache, concurrent branches."""
import json
import os
import shutil
import sys

import pytest
import yaml
from prefect.client.orchestration import get_client

from finetune.errors import UserError
from flows.pipeline import apply_overrides, stage_graph
from tests.support.data import make_rows
from tests.support.params import e2e_text_params, render_params, tiny_params
from tests.support.repos import git_repo, run_flow, sh, write_project

FIRST_STAGES = ("ingest", "preprocess", "train", "evaluate")  # the smallest DAG that trains and scores a model
# they record wall-clock training time or latency
TIMED = {"reports/train.json", "reports/member_summaries", "reports/member_summaries/seed1.json",
         "reports/member_summaries/tfidf.json", "reports/compress.json", "reports/compress", "reports/report.html"}


def _lock(root) -> dict:
    stages = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    return {name: {kind: [e for e in stage.get(kind, []) if e["path"] not in TIMED] for kind in ("deps", "outs")}
            for name, stage in stages.items()}


def test_flow_gives_the_same_lock_as_dvc_repro_and_shares_its_cache(text_repo_snapshot, tiny_model, tmp_path, prefect_harness):
    """~90 s: a real flow run of the four first stages (a stage is a fresh process importing torch and
    transformers, ~5-10 s each), then reruns with an override and a forced target; the whole DAG's
    `dvc repro` it is compared with is the session's shared run (text_repo_snapshot), not run again here."""
    by_dvc, _ = text_repo_snapshot  # the same params, run by `dvc repro`
    by_flow = write_project(tmp_path / "flow", e2e_text_params(tiny_model), make_rows(150))
    render_params(by_flow)  # as the shared run's params.yaml (tools/use_config.py's form)
    dag = yaml.safe_load((by_flow / "dvc.yaml").read_text())
    dag["stages"] = {name: dag["stages"][name] for name in FIRST_STAGES}
    del dag["plots"]
    (by_flow / "dvc.yaml").write_text(yaml.safe_dump(dag, sort_keys=False))
    git_repo(by_flow)

    # the user's command line (against the session's Prefect server, as with a configured PREFECT_API_URL);
    # concurrency = cores gives each stage one torch thread, as the test session gives `dvc repro`
    # (another thread count changes float reduction order, so weights would differ in their last bits)
    from prefect.settings import PREFECT_API_URL

    cores = str(len(os.sched_getaffinity(0)))
    done = sh([sys.executable, "-m", "flows.pipeline", "--concurrency", cores], by_flow, env={"PREFECT_API_URL": PREFECT_API_URL.value()})
    assert "'train': 'Completed'" in done.stdout and "'evaluate': 'Completed'" in done.stdout
    expected = {name: entry for name, entry in _lock(by_dvc).items() if name in FIRST_STAGES}
    assert _lock(by_flow) == expected  # same hashes (model weights included) whichever entry point ran

    assert "Running stage" not in sh(["dvc", "repro"], by_flow).stdout  # dvc repro after the flow: nothing
    assert set(run_flow(by_flow).values()) == {"Cached"}  # and a second flow run: nothing
    assert set(run_flow(by_dvc).values()) == {"Cached"}  # the flow after dvc repro (the whole DAG): nothing

    with get_client(sync_client=True) as client:  # published by that last run, from the whole DAG's reports
        artifacts = {a.key: a for a in client.read_artifacts() if a.key != "test-metrics" or str(by_dvc) in a.data}
    assert "| accuracy |" in artifacts["test-metrics"].data and "baseline: majority class" in artifacts["test-metrics"].data
    assert "ensemble (soft_vote)" in artifacts["test-metrics"].data
    assert "= teacher) | MiB |" in artifacts["compression"].data and "| int8 |" in artifacts["compression"].data
    assert "reports/report.html" in artifacts["report"].data

    states = run_flow(by_flow, overrides=["train.learning_rate=0.002"])
    assert states == {"ingest": "Cached", "preprocess": "Cached", "train": "Completed", "evaluate": "Completed"}
    assert yaml.safe_load((by_flow / "params.yaml").read_text())["train"]["learning_rate"] == 0.002

    states = run_flow(by_flow, target="preprocess", force=True)
    assert states == {"ingest": "Completed", "preprocess": "Completed"}


def test_bad_override_is_rejected_before_any_work(tmp_path, tiny_model):
    root = write_project(tmp_path, tiny_params(tiny_model), make_rows(30))
    before = (root / "params.yaml").read_text()
    with pytest.raises(UserError, match="train.learning_rte: unknown key; did you mean 'learning_rate'"):
        apply_overrides(root, ["train.learning_rte=0.1"])
    with pytest.raises(UserError, match="train.epochs: Input should be greater than 0"):
        apply_overrides(root, ["train.epochs=-1"])
    with pytest.raises(UserError, match="expected key=value"):
        apply_overrides(root, ["train.epochs"])
    assert (root / "params.yaml").read_text() == before


def test_flow_and_dvc_repro_write_the_same_lock(tmp_path, prefect_harness):
    write = f"{sys.executable} -c \"import sys; open(sys.argv[1], 'w').write(sys.argv[1] * 3)\""
    stages = {"x": {"cmd": f"{write} x.txt", "outs": ["x.txt"]}, "y": {"cmd": f"{write} y.txt", "deps": ["x.txt"], "outs": ["y.txt"]}}
    roots = [tmp_path / "flow", tmp_path / "dvc"]
    for root in roots:
        root.mkdir()
        sh(["git", "init", "-q"], root)
        sh(["dvc", "init", "-q"], root)
        (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    run_flow(roots[0])
    sh(["dvc", "repro"], roots[1])
    assert (roots[0] / "dvc.lock").read_text() == (roots[1] / "dvc.lock").read_text()


STAMP = """import json, pathlib, sys, time
out, me, other = sys.argv[1:4]
marks = pathlib.Path("marks")
marks.mkdir(exist_ok=True)
start = time.time()
(marks / me).touch()
if sys.argv[4:] == ["fail"]:
    sys.exit(f"boom: {me} cannot read its input")
while not (marks / other).exists() and time.time() - start < 120:  # meet the other stage: only stages running at once do
    time.sleep(0.05)
json.dump([start, time.time(), (marks / other).exists()], open(out, "w"))
"""


def _toy_project(root, fail_b: bool):
    """a and b are independent: each records when it ran and waits (up to 2 min) to see the other one start, which only
    stages running at the same time do however slow the machine; c needs both."""
    (root / "stamp.py").write_text(STAMP)
    stamp = f"{sys.executable} stamp.py"
    stages = {"a": {"cmd": f"{stamp} a.json a b", "outs": ["a.json"]},
              "b": {"cmd": f"{stamp} b.json b a" + (" fail" if fail_b else ""), "outs": ["b.json"]},
              "c": {"cmd": f"{stamp} c.json c c", "deps": ["a.json", "b.json"], "outs": ["c.json"]}}
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))


def test_independent_stages_overlap_and_failures_stop_downstream(tmp_path, prefect_harness, caplog):
    root = tmp_path
    sh(["git", "init", "-q"], root)
    sh(["dvc", "init", "-q"], root)
    (root / "params.yaml").write_text("{}\n")
    _toy_project(root, fail_b=True)
    assert stage_graph(root) == {"a": set(), "b": set(), "c": {"a", "b"}}

    with pytest.raises(RuntimeError, match="stages not completed: b, c"):
        run_flow(root)
    assert (root / "a.json").exists() and not (root / "c.json").exists()
    assert "boom: b cannot read its input" in caplog.text  # the stage's own error, in the task's log

    _toy_project(root, fail_b=False)  # the fix
    states = run_flow(root)
    assert states == {"a": "Cached", "b": "Completed", "c": "Completed"}  # upstream a stayed cached

    (root / "a.json").unlink()
    (root / "b.json").unlink()
    shutil.rmtree(root / "marks")
    run_flow(root)
    a, b, c = (json.loads((root / f"{name}.json").read_text()) for name in "abc")
    assert a[2] and b[2] and a[0] < b[1] and b[0] < a[1]  # a and b ran at the same time: each saw the other start
    assert c[0] >= max(a[1], b[1])  # c only after both


def test_overrides_keep_every_comment_and_cannot_turn_on_remote_code(tmp_path, tiny_model, monkeypatch):
    root = write_project(tmp_path, tiny_params(tiny_model), make_rows(30))
    monkeypatch.chdir(root)  # a flow run's project is its working directory
    text = (root / "params.yaml").read_text()
    (root / "params.yaml").write_text("# my notes\n" + text.replace("  seed: 3\n", "  seed: 3  # the seed we report\n"))
    apply_overrides(root, ["train.learning_rate=0.002"])
    written = (root / "params.yaml").read_text()
    assert written.startswith("# my notes\n") and "seed: 3  # the seed we report" in written
    assert yaml.safe_load(written)["train"]["learning_rate"] == 0.002
    for override in ("train.trust_remote_code=true", "ensemble.members.seed1.train={trust_remote_code: true}"):
        with pytest.raises(UserError, match="trust_remote_code runs code shipped with a model; turn it on in params.yaml itself"):
            apply_overrides(root, [override])
    assert (root / "params.yaml").read_text() == written


def test_a_second_run_of_the_same_project_stops_with_a_message(tmp_path, prefect_harness):
    from flows.pipeline import RunLock

    sh(["git", "init", "-q"], tmp_path)
    sh(["dvc", "init", "-q"], tmp_path)
    _toy_project(tmp_path, fail_b=False)
    with RunLock(tmp_path, wait=0):  # a run in progress
        with pytest.raises(UserError, match=r"another pipeline run of this project holds .*pipeline.lock; wait for it"):
            run_flow(tmp_path, overrides=[])
    assert not (tmp_path / "a.json").exists()  # nothing ran
