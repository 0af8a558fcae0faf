"""flows.deploy: the pipeline deployed from source to a process work pool, run by a real `prefect worker`."""
import contextlib
import http.server
import json
import os
import subprocess
import sys
import threading
import time
import uuid

import pytest
import yaml

from finetune.errors import UserError
from flows.deploy import RUN_ENV, connected_client, deploy, ensure_pool, locked_job_template, main, storage
from tests.support.data import make_rows
from tests.support.params import tiny_params
from tests.support.repos import commit, git_repo, sh, tool_env, write_project

STAGES = ("ingest", "preprocess")  # the cheapest DAG of the real project


def _project(root, tiny_model):
    write_project(root, tiny_params(tiny_model), make_rows(60))
    dag = yaml.safe_load((root / "dvc.yaml").read_text())
    dag["stages"] = {name: dag["stages"][name] for name in STAGES}
    del dag["plots"]
    (root / "dvc.yaml").write_text(yaml.safe_dump(dag, sort_keys=False))
    return git_repo(root)


def _run_worker(pool: str, name: str, cwd) -> str:
    """`prefect worker start --run-once` as a user starts it from the venv, against the session's server: it
    takes the runs due now, waits for them to end, then exits (killed, with the runs' processes, if it has not
    after 150 s). Its output."""
    from prefect.settings import PREFECT_API_URL

    env = {**tool_env(), "PREFECT_API_URL": PREFECT_API_URL.value()}
    worker = subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--name", name, "--run-once"],
                              cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output = worker.communicate(timeout=150)[0]
    finally:
        if worker.poll() is None:  # the flow run's processes too: they run in their own process groups
            import psutil  # a dependency of DVC

            tree = psutil.Process(worker.pid)
            for process in [*tree.children(recursive=True), tree]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.kill()
            output = worker.communicate()[0]
    assert worker.returncode == 0, output[-4000:]
    return output


def _states(flow_run_id) -> dict[str, str]:
    """{task name: final state name} of a flow run (the flow's own result is not persisted)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {run.name: run.state.name for run in runs}


def test_a_worker_runs_the_deployed_pipeline_in_the_project_whatever_the_run_asks(tmp_path, tiny_model, prefect_harness):
    """~30-45 s (busy 2-core box): deploy from the project's folder, trigger a run, a real worker process picks
    it up and runs `dvc repro`'s stages in that folder (the worker itself starts elsewhere). The run is created as
    an attacker with API access would: job variables replacing the command and the working directory (with
    Prefect's default template the worker ran that command: `id` wrote uid=0(root)); the locked template ignores them."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    root = _project(tmp_path / "project", tiny_model)
    pool, worker_name = f"finetune-{uuid.uuid4().hex[:8]}", "test-worker"
    deployment_id = deploy(str(root), pool, "nightly", cron="0 3 * * *", concurrency=1, allow_unauthenticated=True)
    assert deploy(str(root), pool, "nightly", cron="0 3 * * *", concurrency=1, allow_unauthenticated=True) == deployment_id  # updated in place
    with get_client(sync_client=True) as client:
        work_pool = client.read_work_pool(pool)
        deployment = client.read_deployment(deployment_id)
    assert work_pool.type == "process" and work_pool.base_job_template == locked_job_template([])
    assert work_pool.base_job_template["job_configuration"]["env"] == {**RUN_ENV, "FINETUNE_DASK_ADDRESSES": ""}
    assert deployment.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": str(root.resolve())}}]
    assert deployment.schedules[0].schedule.cron == "0 3 * * *" and deployment.parameters == {"concurrency": 1}
    assert deployment.entrypoint == "flows/pipeline.py:pipeline"

    owned = tmp_path / "owned"
    (tmp_path / "elsewhere").mkdir()
    flow_run = run_deployment(deployment_id, timeout=0,  # scheduled now; nothing runs it but a worker
                              job_variables={"command": f"sh -c 'id > {owned}'", "working_dir": str(tmp_path / "elsewhere")})
    started = time.time()
    output = _run_worker(pool, worker_name, tmp_path / "elsewhere")
    elapsed = time.time() - started
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(flow_run.id)
    assert not owned.exists()
    assert flow_run.state.is_completed(), output[-4000:]
    assert flow_run.work_pool_name == pool and f"Worker '{worker_name}' submitting flow run '{flow_run.id}'" in output, output[-4000:]
    assert _states(flow_run.id) == {"ingest": "Completed", "preprocess": "Completed"}
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    assert set(lock) == set(STAGES)  # run through DVC in the project, not in the worker's folder
    assert (root / "data/ingested.parquet").is_file() and (root / "data/prepared").is_dir()
    assert not (tmp_path / "elsewhere/dvc.lock").exists()
    print(f"worker picked up and completed the run in {elapsed:.1f} s")


def test_a_git_source_is_cloned_on_the_worker_and_restored_from_the_dvc_remote(tmp_path, tiny_model, prefect_harness):
    """~20-35 s: the project pushed to a git origin and its outputs to a DVC remote (both local folders); the
    worker clones it into --workdir, `dvc pull` restores the outputs, so the run recomputes nothing."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    write = f"{sys.executable} -c \"import sys; open(sys.argv[1], 'w').write(sys.argv[1] * 3)\""
    root = write_project(tmp_path / "project", tiny_params(tiny_model), make_rows(30))
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {  # two quick stages: what is tested here is where outputs come from
        "x": {"cmd": f"{write} x.txt", "outs": ["x.txt"]}, "y": {"cmd": f"{write} y.txt", "deps": ["x.txt"], "outs": ["y.txt"]}}}))
    git_repo(root)
    sh(["dvc", "remote", "add", "-d", "team", str(tmp_path / "dvc-remote")], root)
    sh(["dvc", "repro"], root)
    sh(["dvc", "push", "--run-cache"], root)
    commit(root, "nightly inputs")
    sh(["git", "clone", "-q", "--bare", str(root), str(tmp_path / "origin.git")], tmp_path)

    pool = f"finetune-{uuid.uuid4().hex[:8]}"
    workdir = tmp_path / "runs"
    deployment_id = deploy(f"file://{tmp_path}/origin.git", pool, "nightly", cron="0 3 * * *", workdir=str(workdir), allow_unauthenticated=True)
    flow_run = run_deployment(deployment_id, timeout=0)
    output = _run_worker(pool, "git-worker", tmp_path)
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(flow_run.id).state.is_completed(), output[-4000:]
    assert "Deployment step 'run_shell_script' completed successfully" in output, output[-4000:]  # the dvc pull
    assert _states(flow_run.id) == {"x": "Cached", "y": "Cached"}, output[-4000:]  # restored, not recomputed
    clone = workdir / "origin"
    assert (clone / "y.txt").read_text() == "y.txty.txty.txt"  # kept on the worker for the next run


@contextlib.contextmanager
def _refusing_server(auth_string: str | None = None):
    """A stand-in for a server with PREFECT_SERVER_API_AUTH_STRING set, answering as it does: /health 200 (probes
    need no credentials), everything else 200 with the right basic auth (auth_string), else 401."""
    import base64

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            authorized = auth_string and self.headers.get("Authorization") == f"Basic {base64.b64encode(auth_string.encode()).decode()}"
            ok = self.path == "/api/health" or bool(authorized)
            body = b"true" if ok else json.dumps({"exception_message": "Unauthorized"}).encode()
            self.send_response(200 if ok else 401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/api"
    finally:
        server.shutdown()
        server.server_close()


def test_bad_input_is_refused_before_anything_is_created(tmp_path, tiny_model, prefect_harness, capsys):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings
    from prefect.workers.process import ProcessWorker

    root = write_project(tmp_path / "project", tiny_params(tiny_model), make_rows(30))
    pool = f"finetune-{uuid.uuid4().hex[:8]}"
    for kwargs, message in (
        ({"source": str(tmp_path)}, "not the project \\(no dvc.yaml, flows/pipeline.py in"),
        ({"cron": "0 25 * * *"}, "--cron '0 25 \\* \\* \\*'"),
        ({"timezone": "Mars/Olympus"}, "--timezone 'Mars/Olympus'"),
        ({"overrides": ["train.learning_rte=0.1"]}, "train.learning_rte: unknown key"),
        ({"workdir": "/srv/runs"}, "--workdir applies to a git source only"),
        ({"source": "file:///srv/git/finetune.git", "workdir": "runs"}, "--workdir runs: expected an absolute path"),
        ({"concurrency": 0}, "--concurrency 0: expected 1 or more"),
        ({"source": "file:///nowhere/origin.git"}, "--source file:///nowhere/origin.git: Failed to clone repository"),
        ({"dask_addresses": ["tcp://ok:8786", "http://evil"]}, "--dask-address 'http://evil': expected a Dask scheduler address"),
        ({"allow_unauthenticated": False}, "answers without authentication: anyone who can reach it can run any command"),
    ):
        with pytest.raises(UserError, match=message):
            deploy(**{"source": str(root), "pool": pool, "name": "nightly", "cron": "0 2 * * *", "allow_unauthenticated": True, **kwargs})
    with get_client(sync_client=True) as client:
        assert pool not in {p.name for p in client.read_work_pools()}  # nothing was created
        client.create_work_pool(WorkPoolCreate(name=pool, type="kubernetes"))
        with pytest.raises(UserError, match=f"work pool '{pool}' exists with type 'kubernetes'; expected 'process'"):
            ensure_pool(client, pool, locked_job_template([]))
        default = f"{pool}-default"  # a pool made with Prefect's default template (an earlier deploy, or by hand) is locked
        client.create_work_pool(WorkPoolCreate(name=default, type="process", base_job_template=ProcessWorker.get_default_base_job_template()))
        assert ensure_pool(client, default, locked_job_template(["tcp://10.0.0.5:8786"])) == "locked"
        assert client.read_work_pool(default).base_job_template["job_configuration"]["env"]["FINETUNE_DASK_ADDRESSES"] == "tcp://10.0.0.5:8786"
        assert ensure_pool(client, default, locked_job_template(["tcp://10.0.0.5:8786"])) == "exists"

    unreachable = "http://127.0.0.1:9/api"  # the discard port: nothing listens
    with temporary_settings({PREFECT_API_URL: unreachable}), pytest.raises(UserError, match=f"the Prefect API at {unreachable} does not answer"):
        deploy(str(root), pool, "nightly", "0 2 * * *")
    refused = "refused the request \\(401 Unauthorized\\); PREFECT_API_AUTH_STRING must be the server's"
    with _refusing_server() as url, temporary_settings({PREFECT_API_URL: url}), pytest.raises(UserError, match=refused):
        deploy(str(root), pool, "nightly", "0 2 * * *")
    with _refusing_server("admin:pass") as url, temporary_settings({PREFECT_API_URL: url, PREFECT_API_AUTH_STRING: "admin:pass"}), \
            connected_client() as client:  # a server with authentication: accepted, no warning
        assert client.hello().status_code == 200
    assert "WARNING" not in capsys.readouterr().err
    with connected_client(allow_unauthenticated=True):  # the harness answers anyone: allowed on request, loudly
        pass
    assert capsys.readouterr().err.startswith(f"WARNING: the Prefect API at {PREFECT_API_URL.value()} answers without authentication")
    with temporary_settings({PREFECT_API_URL: None}), pytest.raises(UserError, match="PREFECT_API_URL is not set"):
        deploy(str(root), pool, "nightly", "0 2 * * *")
    with pytest.raises(SystemExit) as exit_:  # the command line: one line, no traceback
        main(["--source", str(root), "--cron", "every night"])
    assert exit_.value.code == 2 and capsys.readouterr().err.startswith("error: --cron 'every night' --timezone 'UTC': ")


@pytest.mark.parametrize("source, branch, message", [
    ("--upload-pack=touch /tmp/owned.git", None, "--source '--upload-pack=touch /tmp/owned.git' starts with '-'"),
    ("https://example.com/team/finetune.git", "--orphan", "--branch '--orphan' starts with '-'"),
    ("https://ghp_s3cret@github.com/team/finetune.git", None, "--source https://\\*\\*\\*@github.com/team/finetune.git: credentials"),
    ("https://ci:ghp_s3cret@github.com/team/finetune.git", None, "--source https://\\*\\*\\*@github.com/team/finetune.git: credentials"),
    ("ssh://git:s3cret@example.com/finetune.git", None, "--source ssh://\\*\\*\\*@example.com/finetune.git: credentials"),
])
def test_a_git_source_read_as_an_option_or_holding_a_token_is_refused(source, branch, message):
    """Both reached git and the deployment before: an option to `git clone`, a token stored in the pull step."""
    with pytest.raises(UserError, match=message) as refused:
        storage(source, branch, None)
    assert "s3cret" not in str(refused.value)


def test_a_token_reaches_the_clone_from_an_environment_variable_never_the_deployment(monkeypatch):
    from prefect.utilities.templating import apply_values

    url = "https://github.com/team/finetune.git"
    monkeypatch.setenv("FINETUNE_GIT_TOKEN", "ghp_s3cret")
    repository = storage(url, None, "/srv/runs", "FINETUNE_GIT_TOKEN")
    steps = repository.to_pull_step()
    assert "ghp_s3cret" not in json.dumps(steps)
    clone = next(step["prefect.deployments.steps.git_clone"] for step in steps if "prefect.deployments.steps.git_clone" in step)
    assert clone["repository"] == url
    assert "ghp_s3cret@github.com" in repository._repository_url_with_credentials  # this machine's clone, to deploy
    monkeypatch.setenv("FINETUNE_GIT_TOKEN", "ghp_w0rker")  # a worker's environment: a run's pull step resolves it so
    assert apply_values(clone, os.environ)["access_token"] == "ghp_w0rker"
    monkeypatch.delenv("FINETUNE_GIT_TOKEN")
    with pytest.raises(UserError, match="--git-token-env FINETUNE_GIT_TOKEN: expected the name of a set environment variable"):
        storage(url, None, None, "FINETUNE_GIT_TOKEN")
    with pytest.raises(UserError, match="--git-token-env applies to an https git source"):
        storage("ssh://git@example.com/finetune.git", None, None, "FINETUNE_GIT_TOKEN")
