"""Team sharing (docs/team-sharing.md): one person trains and runs `make push`; teammates `make pull` and get the
results without retraining. Offline: a bare git repo stands in for the git host and a local folder for the DVC
remote (S3 and the like behave the same through DVC's plugins), both in the test's temp dir. Clone A is a copy of
the session's tiny text run (text_repo_snapshot); B and C are `git clone`s with no DVC cache. The real Makefile
targets run (`make -o .venv/.installed`: the venv is this test's, not one in the clone)."""
import json
import shutil

import pytest
import yaml

from tests.support.repos import PROJECT, commit, copy_repo, repro, run_flow, set_param, sh

UP_TO_DATE = "Data and pipelines are up to date."


def make(root, target, check=True):
    return sh(["make", "-o", ".venv/.installed", target], root, check=check)


@pytest.fixture
def team(text_repo_snapshot, tmp_path):
    """(A, origin, remote): A holds the whole tiny run, knows the origin and the DVC remote; nothing pushed yet."""
    a, origin, remote = copy_repo(text_repo_snapshot[0], tmp_path / "a"), tmp_path / "origin.git", tmp_path / "remote"
    for name in ("Makefile", "tools/check_push.py", "tools/runs.py", ".gitignore"):
        shutil.copy(PROJECT / name, a / name)
    sh(["git", "init", "-q", "--bare", str(origin)], tmp_path)
    sh(["git", "remote", "add", "origin", str(origin)], a)
    sh(["git", "config", "push.autoSetupRemote", "true"], a)  # the first `git push` of `make push` sets the upstream
    sh(["dvc", "remote", "add", "-d", "team", str(remote)], a)  # written to .dvc/config: clones get it from git
    commit(a, "share through the team remote")
    return a, origin, remote


def clone(origin, target):
    sh(["git", "clone", "-q", str(origin), str(target)], origin.parent)
    assert not (target / ".dvc/cache").exists()
    return target


def test_teammates_get_the_results_without_retraining(team, tmp_path):
    a, origin, remote = team
    report_a = (a / "reports/report.html").read_bytes()
    make(a, "push")
    assert any((remote / "runs").iterdir())  # the run cache went with the outputs

    # B: a fresh clone pulls everything; nothing to rerun, same numbers
    b = clone(origin, tmp_path / "b")
    make(b, "pull")
    assert sh(["dvc", "status"], b).stdout.strip() == UP_TO_DATE
    assert repro(b) == []
    assert (b / "reports/metrics.json").read_text() == (a / "reports/metrics.json").read_text()
    assert (b / "models/model/model.safetensors").read_bytes() == (a / "models/model/model.safetensors").read_bytes()

    # B changes a cheap param (only the report reads it), reruns, shares; A pulls B's result
    set_param(b, "report.title", "Team report")
    assert repro(b) == ["report"]
    commit(b, "retitle the report")
    make(b, "push")
    make(a, "pull")
    assert "Team report" in (a / "reports/report.html").read_text()
    assert sh(["dvc", "status"], a).stdout.strip() == UP_TO_DATE and repro(a) == []

    # C: empty cache, back on A's params. The run cache (pulled by --pull with each output it names) restores the
    # report A made: no stage runs. dvc.lock (B's) names B's report, so a plain `dvc pull` could not give A's.
    c = clone(origin, tmp_path / "c")
    set_param(c, "report.title", "Tiny report")
    done = sh(["dvc", "repro", "--pull"], c)
    assert "Running stage" not in done.stdout, done.stdout
    assert "Stage 'report' is cached - skipping run, checking out outputs" in done.stdout
    assert (c / "reports/report.html").read_bytes() == report_a
    assert (c / "reports/metrics.json").read_text() == (a / "reports/metrics.json").read_text()


def test_a_run_nobody_committed_restores_for_a_teammate(team, tmp_path, prefect_harness):
    """Issue 41: A tries a learning rate, never commits that run, goes back to the committed params, and `make push`
    (which must upload every local run, not only the checked-out one). B, on the same code with the same learning
    rate, gets A's run from `dvc repro --pull` with no stage run: the same metrics and weights. C, whose code differs
    in one stage, runs that stage only; `finetune runs` told C so beforehand, and adopted the run's params. D gets the
    run through the Prefect flow."""
    a, origin, remote = team
    committed_rate = yaml.safe_load((a / "params.yaml").read_text())["train"]["learning_rate"]
    tried_rate = f"train.learning_rate 0.001 (here {json.dumps(committed_rate)})"
    set_param(a, "train.learning_rate", 0.001)
    assert "train" in repro(a)
    tried = {path: (a / path).read_bytes() for path in ("reports/metrics.json", "reports/ensemble.json",
                                                        "reports/train.json", "models/model/model.safetensors")}
    sh(["git", "checkout", "--", "."], a)  # back to the committed run: params, dvc.lock, the metrics files
    sh(["dvc", "checkout"], a)
    assert sh(["dvc", "status"], a).stdout.strip() == UP_TO_DATE and repro(a) == []
    pushed = make(a, "push").stdout
    runs = [line for line in pushed.splitlines() if line.startswith("pushed run ")]  # the committed run and the tried one
    assert len(runs) == 2 and all("9 stage(s) up to report" in line for line in runs), pushed
    assert runs[1].endswith(f"params: {tried_rate}") and runs[0].endswith("params: as params.yaml"), pushed

    b = clone(origin, tmp_path / "b")
    make(b, "pull")
    set_param(b, "train.learning_rate", 0.001)
    done = sh(["dvc", "repro", "--pull"], b)
    assert "Running stage" not in done.stdout, done.stdout
    for path, content in tried.items():
        assert (b / path).read_bytes() == content, path
    assert sh(["dvc", "status"], b).stdout.strip() == UP_TO_DATE

    c = clone(origin, tmp_path / "c")
    with (c / "stages/report.py").open("a") as f:
        f.write("# another code version of the report stage\n")
    listed = sh(["finetune", "runs"], c).stdout
    runs = [line for line in listed.splitlines() if line.startswith("run ")]
    assert len(runs) == 2 and all("every output in the remote" in line for line in runs), listed
    assert f"params: {tried_rate}" in listed, listed
    assert listed.count("code and data: 1 file(s) differ from this workspace: stages/report.py") == 2, listed
    assert "metrics: accuracy " in listed and "ensemble: method " in listed, listed
    paragraphs = ["run " + text for text in f"\n{listed}".split("\nrun ")[1:]]
    run_id = next(text.split()[1].rstrip(":") for text in paragraphs if tried_rate in text)
    sh(["finetune", "runs", "--apply", run_id], c)
    assert yaml.safe_load((c / "params.yaml").read_text())["train"]["learning_rate"] == 0.001
    assert repro(c, "--pull") == ["report"]  # every other stage restored from A's run
    for path, content in tried.items():
        assert (c / path).read_bytes() == content, path

    # D runs the Prefect flow, as a nightly deployment does: with a default remote its stages pull like `dvc repro --pull`
    d = clone(origin, tmp_path / "d")
    states = run_flow(d, overrides=["train.learning_rate=0.001"], concurrency=1)
    assert set(states.values()) == {"Restored"}, states
    for path, content in tried.items():
        assert (d / path).read_bytes() == content, path


def cached_file(root, out, name):
    """The DVC cache object of file `name` inside the folder output `out` (DVC 3's layout: files/md5/ab/cdef...)."""
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    folder = next(o["md5"] for stage in lock.values() for o in stage.get("outs", []) if o["path"] == out)
    cache = root / ".dvc/cache/files/md5"
    md5 = next(e["md5"] for e in json.loads((cache / folder[:2] / folder[2:]).read_text()) if e["relpath"] == name)
    return cache / md5[:2] / md5[2:]


def test_the_pre_push_check_names_an_output_missing_from_the_cache(team, tmp_path):
    a, origin, remote = team
    cached_file(a, "models/model", "model.safetensors").unlink()

    done = make(a, "push", check=False)
    assert done.returncode != 0
    assert ("models/model (stage train): the workspace copy matches dvc.lock: `dvc commit -f train` puts it back "
            "in the cache") in done.stderr, done.stderr
    assert not remote.exists() and not sh(["git", "branch", "-r"], a).stdout.strip()  # nothing pushed, data or git

    # Pushed anyway, bypassing the check: DVC itself exits 0. A teammate's `make pull` gets everything else, and is told
    sh(["dvc", "push", "--run-cache"], a)
    sh(["git", "push", "-q"], a)
    b = clone(origin, tmp_path / "b")
    pulled = make(b, "pull")
    assert "models/model (stage train): not in the remote" in pulled.stderr, pulled.stderr
    assert (b / "data/prepared").is_dir() and (b / "reports/evaluate").is_dir()
    assert not (b / "models/model").exists()

    # The fix the check named; then the push goes through
    sh(["dvc", "commit", "-f", "train"], a)
    make(a, "push")
    assert "models/model" not in make(b, "pull").stderr
    assert (b / "models/model/model.safetensors").read_bytes() == (a / "models/model/model.safetensors").read_bytes()


def test_a_queued_grid_of_experiments_runs_and_is_shared(team, tmp_path):
    """docs/team-sharing.md "Experiments": a grid queued with `dvc exp run --queue`, run with `--run-all`; each experiment reruns
    only the stages its params feed (the rest come from the run cache), and `dvc exp push`/`pull` share one."""
    a, origin, remote = team
    sh(["git", "push", "-q"], a)
    queued = sh(["dvc", "exp", "run", "--queue", "-S", "ensemble.method=hard_vote,stacking"], a).stdout
    assert queued.count("Queued experiment") == 2, queued
    sh(["dvc", "exp", "run", "--run-all", "--jobs", "1"], a)

    shown = json.loads(sh(["dvc", "exp", "show", "--json"], a).stdout)
    experiments = [exp for commit in shown for exp in commit.get("experiments") or []]
    methods = {}
    for exp in experiments:
        assert exp["executor"]["state"] == "success", exp["executor"]
        name, data = exp["name"], exp["revs"][0]["data"]
        methods[name] = data["metrics"]["reports/ensemble.json"]["data"]["method"]
        log = sh(["dvc", "queue", "logs", name], a).stdout
        assert "Running stage 'ensemble'" in log and "Running stage 'train'" not in log, log  # upstream stages: run cache
    assert sorted(methods.values()) == ["hard_vote", "stacking"]

    stacking = next(name for name, method in methods.items() if method == "stacking")
    sh(["dvc", "exp", "push", "origin", stacking], a)  # the commit to git, its outputs to the DVC remote
    b = clone(origin, tmp_path / "b")
    sh(["dvc", "exp", "pull", "origin", stacking], b)
    sh(["dvc", "exp", "apply", stacking], b)
    assert sh(["dvc", "status"], b).stdout.strip() == UP_TO_DATE
    assert json.loads((b / "reports/ensemble.json").read_text())["method"] == "stacking"
    assert yaml.safe_load((b / "params.yaml").read_text())["ensemble"]["method"] == "stacking"
