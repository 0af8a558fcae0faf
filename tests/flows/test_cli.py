"""The `finetune` console script, run for real as `make setup` installs it (pip install -e .): every command answers
--help without loading the heavy libraries, predict and results work on the session's tiny text project, mistakes exit 2
with one line, and the package builds into a wheel that carries the task folders."""
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from flows.cli import COMMANDS
from tests.support.repos import PROJECT, copy_repo, tool_env

FINETUNE = Path(sys.executable).parent / "finetune"


def finetune(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(FINETUNE), *map(str, args)], cwd=cwd, env=tool_env(), capture_output=True, text=True, timeout=600, check=False)


def test_every_command_has_help_and_none_imports_torch_to_give_it(tmp_path):
    assert FINETUNE.is_file(), "the console script is missing: `make setup` installs it (pip install -e .)"
    listing = finetune("--help", cwd=tmp_path)
    assert listing.returncode == 0 and all(f"  {name} " in listing.stdout for name in COMMANDS)
    for name in COMMANDS:
        shown = finetune(name, "--help", cwd=tmp_path)
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.startswith(f"usage: finetune {name}"), shown.stdout[:200]
    probe = ("import sys; from flows import cli\n"
             "for name in ('predict', 'serve', 'run', 'results', 'runs'):\n"
             "    try: cli.main([name, '--help'])\n"
             "    except SystemExit: pass\n"
             "print(sorted(m for m in ('torch', 'transformers', 'pandas', 'prefect', 'dvc') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], cwd=PROJECT, capture_output=True, text=True, env=tool_env(), check=False)
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout[-500:]


def test_predict_results_and_run_in_the_tiny_project(text_repo_snapshot, tmp_path):
    root = copy_repo(text_repo_snapshot[0], tmp_path / "repo")
    raw = pd.read_csv(root / "data/raw/tiny.csv")
    raw.head(5)[["text"]].to_csv(tmp_path / "new.csv", index=False)
    done = finetune("predict", "--input", tmp_path / "new.csv", "--output", tmp_path / "out.parquet", cwd=root)
    assert done.returncode == 0, done.stderr
    assert "predict: 5 rows" in done.stdout
    out = pd.read_parquet(tmp_path / "out.parquet")
    assert out["input"].tolist() == raw["text"].head(5).tolist() and out.filter(like="prob_").sum(axis=1).round(5).eq(1).all()

    shown = finetune("results", cwd=root)
    assert shown.returncode == 0 and any(line.startswith("metrics: accuracy") for line in shown.stdout.splitlines()), shown.stdout
    assert max(len(line) for line in shown.stdout.splitlines()) < 1000  # `dvc metrics show` prints thousands of columns

    rerun = finetune("run", cwd=root)
    assert rerun.returncode == 0, rerun.stderr
    assert "Data and pipelines are up to date" in rerun.stdout + rerun.stderr

    listed = finetune("runs", "--local", cwd=root)  # tests/test_team_sharing.py lists a remote's runs
    assert listed.returncode == 0 and listed.stdout.startswith("run ") and listed.stdout.count("\nrun ") == 0, listed.stdout
    assert "every output in the local cache -- checked out here (dvc.lock)" in listed.stdout, listed.stdout
    assert "params: as params.yaml\n  code and data: as this workspace\n  metrics: accuracy " in listed.stdout, listed.stdout
    no_remote = finetune("runs", cwd=root)
    assert no_remote.returncode == 2 and "error: no DVC remote to list runs from" in no_remote.stderr, no_remote.stderr


@pytest.mark.parametrize("args, message", [
    (("results",), "holds no dvc.yaml; run this command in the project's root folder"),
    (("predict", "--model", "nowhere", "--input", "x.csv", "--output", "out.csv"), "--input x.csv: no such file or folder"),
    (("predict", "--input", "."), "the following arguments are required: --output"),
    (("fly",), "invalid choice: 'fly'"),
])
def test_mistakes_are_one_line_and_exit_2(tmp_path, args, message):
    done = finetune(*args, cwd=tmp_path)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_the_wheel_carries_every_task_folder_and_the_command(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "requirements.txt"):
        shutil.copy(PROJECT / name, source / name)
    for name in ("finetune", "stages", "flows"):
        shutil.copytree(PROJECT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"), str(source)],
                   check=True, capture_output=True, env=tool_env())
    wheel = next((tmp_path / "dist").glob("finetune_pipeline-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    tasks = [path.name for path in (PROJECT / "finetune/tasks").iterdir() if (path / "__init__.py").is_file()]
    assert tasks and all(f"finetune/tasks/{task}/__init__.py" in names for task in tasks)
    assert {"stages/train.py", "flows/cli.py", "finetune/inference.py"} <= set(names)
    entry_points = next(name for name in names if name.endswith("entry_points.txt"))
    assert "finetune = flows.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_config_export_and_generate_through_the_command(text_repo_snapshot, lm_repo, tmp_path):
    root = copy_repo(text_repo_snapshot[0], tmp_path / "repo")
    refused = finetune("config", "image", cwd=root)  # the run's params are in no configs/ file: switching would lose them
    assert refused.returncode == 2 and "save them first" in refused.stderr
    assert finetune("config", "--save", "tiny", cwd=root).returncode == 0
    switched = finetune("config", "image", cwd=root)
    assert switched.returncode == 0 and "task: image-classification" in (root / "params.yaml").read_text(), switched.stderr
    assert finetune("config", "tiny", cwd=root).returncode == 0 and "task: text-classification" in (root / "params.yaml").read_text()
    exported = finetune("export", "--model", "models/model", "--to", tmp_path / "shared", cwd=root)
    assert exported.returncode == 0 and "model card README.md" in exported.stdout, exported.stderr
    assert (tmp_path / "shared/README.md").is_file() and (tmp_path / "shared/pipeline.json").is_file()
    again = finetune("export", "--model", "models/model", "--to", tmp_path / "shared", cwd=root)
    assert again.returncode == 2 and "exists; choose a new folder or pass --force" in again.stderr
    generated = finetune("generate", "--model", lm_repo[0] / "models/model", "--max-new-tokens", "5", "--temperature", "0", "to be", cwd=tmp_path)
    assert generated.returncode == 0 and re.search(r"\d new tokens in", generated.stderr), generated.stderr
