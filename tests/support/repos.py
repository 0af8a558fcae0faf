"""Scratch projects: a copy of the project's code and DVC files with its own params and data, as a git repo; running the
tools (dvc, git, the Prefect flow) like a user, and what `dvc repro` would run."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

PROJECT = Path(__file__).resolve().parents[2]


PROJECT_FILES = ["stages", "finetune", "flows", "tools", "configs", "dvc.yaml", "params.yaml", "requirements-assets.txt", ".dvcignore", ".dvc/config", ".dvc/.gitignore",
                 ".dvc/plots_template.html",  # written by `make setup`
                 "data/raw/README.md", "models/pretrained/README.md", "reports/search/README.md"]


def write_project(root: Path, params: dict, rows: pd.DataFrame | None = None) -> Path:
    """A copy of the project's code and DVC files with its own params (model placed in it) and data."""
    for name in PROJECT_FILES:
        source, target = PROJECT / name, root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, target)
    from tests.support.params import write_params

    if rows is not None:
        rows.to_csv(root / "data/raw/tiny.csv", index=False)
    write_params(root, params)
    return root


def tool_env() -> dict:
    """The environment a user's `make` gives: this interpreter's bin first on PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.update(DVC_NO_ANALYTICS="1", HF_HUB_OFFLINE="1", PYTHONHASHSEED="0")
    return env


def sh(args: list[str], cwd: Path, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(args, cwd=cwd, env={**tool_env(), **(env or {})}, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


GIT = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]


def git_repo(root: Path) -> Path:
    """root as a git repo with everything committed (DVC needs git for params diff and the like)."""
    sh(["git", "init", "-q"], root)
    commit(root, "project")
    return root


def commit(root: Path, message: str) -> None:
    sh([*GIT, "add", "-A"], root)
    sh([*GIT, "commit", "-qm", message, "--allow-empty"], root)


def repro(root: Path, *args: str) -> list[str]:
    """`dvc repro ARGS` like a user; the names of the stages that RAN (not those restored from DVC's run cache)."""
    import re

    done = sh(["dvc", "repro", *args], root)
    return re.findall(r"Running stage '([\w@-]+)'", done.stdout)


def plots_page(root: Path, out: Path) -> str:
    """`dvc plots show` like a user: it must render every picture the run drew (reports/plots/) and every curve dvclive
    logged, offline, and fail to load nothing (DVC then still exits 0, so its message is what tells)."""
    done = sh(["dvc", "plots", "show", "-o", str(out)], root)
    assert "failed to load" not in done.stdout + done.stderr, done.stdout + done.stderr
    page = (out / "index.html").read_text()
    assert "<script src=" not in page and "cdn.jsdelivr" not in page  # the libraries are inlined (tools/plots_template.py)
    pictures = sorted((root / "reports/plots").rglob("*.png"))
    curves = sorted((root / "reports/train_live/plots/metrics").rglob("*.tsv"))
    assert curves, "the train stage logged no curve"
    for picture in pictures:
        assert "_".join(picture.relative_to(root).with_suffix("").parts) in page, picture
    assert page.count("vegaEmbed('#") == len(curves)
    return page


def set_param(root: Path, dotted: str, value) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    *parents, last = dotted.split(".")
    node = params
    for part in parents:
        node = node[part]
    node[last] = value
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def run_flow(root: Path, concurrency: int = 2, **parameters) -> dict[str, str]:
    """The Prefect pipeline flow on the project at root (a flow run's project is the current directory)."""
    import contextlib

    from flows.pipeline import pipeline

    with contextlib.chdir(root):
        return pipeline(concurrency=concurrency, **parameters)


# DVC's lock files: another test's `dvc status` on the (shared, read-only) source may be rewriting one while it is
# copied, and a half-copied rwlock is "JSON structure is corrupted" to the copy's first `dvc repro`.
DVC_LOCKS = {"rwlock", "rwlock.lock", "lock"}


def copy_repo(source: Path, target: Path) -> Path:
    """A copy of a project repo, its git history and DVC cache (run cache included) too, without DVC's locks."""
    def locks(folder: str, names: list[str]) -> set[str]:
        return DVC_LOCKS & set(names) if Path(folder).parts[-2:] == (".dvc", "tmp") else set()

    shutil.copytree(source, target, symlinks=True, ignore=locks)
    return target


def planned(root) -> set[str]:
    """What `dvc repro` would run: the stages `--dry` sees changed, and every stage downstream of them."""
    import re

    import networkx
    from dvc.repo import Repo

    changed = set(re.findall(r"Running stage '([\w@-]+)'", sh(["dvc", "repro", "--dry"], root).stdout))
    with Repo(str(root)) as dvc:
        graph = dvc.index.graph  # edges go from a stage to the stages it depends on
        names = {stage: stage.name for stage in graph.nodes if getattr(stage, "name", None)}
        downstream = {names[d] for stage in graph.nodes if names.get(stage) in changed for d in networkx.ancestors(graph, stage) if d in names}
    return changed | downstream
