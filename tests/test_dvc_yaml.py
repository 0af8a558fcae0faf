"""dvc.yaml must list every code file each stage runs, and agree with params.yaml and paths.py."""
import re
import subprocess
import sys

import pytest
import yaml

from finetune import paths
from finetune.config.params import load_params
from tests.support.import_graph import project_imports, stage_code
from tests.support.repos import PROJECT

DVC = yaml.safe_load((PROJECT / "dvc.yaml").read_text())
STAGES = {name: stage.get("do", stage) for name, stage in DVC["stages"].items()}  # a foreach stage's template
TASK_FOLDER = "finetune/tasks/${task}"


def _module(stage: dict) -> str:
    match = re.fullmatch(r"python -m stages\.(\w+)", stage["cmd"])  # nothing interpolated: no params value in a shell
    assert match, f"unexpected cmd {stage['cmd']!r}"
    return match.group(1)


@pytest.mark.parametrize("name", STAGES)
def test_stage_deps_list_the_shared_code_it_runs_and_the_tasks_folder(name):
    stage = STAGES[name]
    needed = stage_code(PROJECT, _module(stage))  # {task: every project file the stage runs for it}
    in_folders = {f"finetune/tasks/{task}/" for task in needed}
    shared = {path for files in needed.values() for path in files if not path.startswith(tuple(in_folders))}
    listed = set(stage["deps"])
    assert TASK_FOLDER in listed, f"stage {name!r} runs the task but does not list its folder {TASK_FOLDER}"
    assert not shared - listed, f"stage {name!r} runs {sorted(shared - listed)} but dvc.yaml does not list them as deps"
    listed_code = {d for d in listed if d.endswith(".py")}
    assert listed_code <= shared, f"stage {name!r} lists code it never runs: {sorted(listed_code - shared)}"
    for task, files in needed.items():  # a task's own code is in its folder, never another's
        assert not {f for f in files if f.startswith(tuple(in_folders - {f"finetune/tasks/{task}/"}))}, task


def test_the_import_graph_follows_functions_relative_imports_and_the_stage_rule():
    imported = project_imports(PROJECT, PROJECT / "finetune/config/params.py")
    assert "finetune/tasks/__init__.py" in imported  # the schema asks the registry inside a function
    text = project_imports(PROJECT, PROJECT / "finetune/tasks/text-classification/__init__.py")
    assert "finetune/tasks/text-classification/tokens.py" in text  # `from . import tokens`
    assert "finetune/tasks/text-classification/explain.py" in text  # the explainer, imported inside a method...
    train = project_imports(PROJECT, PROJECT / "finetune/tasks/text-classification/__init__.py", stage="train")
    assert "finetune/tasks/text-classification/explain.py" not in train  # ...runs in explain only
    assert "finetune/attribution/deletion.py" not in stage_code(PROJECT, "train")["text-classification"]


def test_no_stage_imports_another_stage_and_finetune_never_imports_stages():
    for module in [*PROJECT.glob("stages/*.py"), *PROJECT.glob("finetune/**/*.py")]:
        imported = project_imports(PROJECT, module) - {str(module.relative_to(PROJECT)), "stages/__init__.py"}
        stages = {path for path in imported if path.startswith("stages/")}
        assert not stages, f"{module.relative_to(PROJECT)} imports {sorted(stages)}"


def test_the_layer_check_is_clean():
    """python ../shared/tools/layer_check.py where the team's shared tools sit beside the project (CI has them)."""
    tool = PROJECT.parent / "shared/tools/layer_check.py"
    if not tool.is_file():
        pytest.skip(f"{tool} is not here")
    done = subprocess.run([sys.executable, str(tool)], cwd=PROJECT, capture_output=True, text=True)
    assert done.stdout.strip() == "stage imports clean", done.stdout


@pytest.mark.parametrize("name", STAGES)
def test_stage_params_exist_in_params_yaml(name):
    raw = yaml.safe_load((PROJECT / "params.yaml").read_text())
    for key in STAGES[name].get("params", []):
        key = key.replace("${key}", next(iter(raw["ensemble"]["members"])))
        node = raw
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, f"{name}: param {key!r} is not in params.yaml"
            node = node[part]


def test_params_yaml_is_valid_and_spells_out_every_key():
    params = load_params(PROJECT / "params.yaml")
    raw = yaml.safe_load((PROJECT / "params.yaml").read_text())

    def keys(tree, prefix=""):
        return {f"{prefix}{k}" for k in tree} | {x for k, v in tree.items() if isinstance(v, dict) and k not in ("splits", "members", "space")
                                                 for x in keys(v, f"{prefix}{k}.")}
    assert keys(params.model_dump()) == keys(raw)  # (each member, each search axis, spells out only what it sets)


def test_outputs_match_the_paths_the_code_writes():
    declared = set()
    for stage in STAGES.values():
        for kind in ("outs", "metrics"):
            for out in stage.get(kind, []):
                declared.add((next(iter(out)) if isinstance(out, dict) else out).replace("/${key}.json", "").replace("/${key}", ""))
    written = {paths.MEMBER_MODELS, paths.MEMBER_REPORTS, paths.MEMBER_SUMMARIES, paths.ENSEMBLE, paths.ENSEMBLE_MODEL, paths.ENSEMBLE_METRICS,
               paths.INGESTED,
               paths.QUARANTINE / "ingest.csv", paths.QUARANTINE / "preprocess.csv", paths.PREPARED, paths.MODEL, paths.INGEST_SUMMARY,
               paths.PREPROCESS_SUMMARY, paths.TRAIN_SUMMARY, paths.TRAIN_LIVE, paths.METRICS, paths.EVALUATION, paths.REPORT_HTML, paths.PLOTS,
               paths.COMPRESSED, paths.COMPRESS, paths.COMPRESS_METRICS, paths.EXPLAIN, paths.EXPLAIN_METRICS}
    assert {str(p) for p in written} == declared


def test_a_crafted_member_name_never_reaches_a_shell(tmp_path, tiny_model):
    from tests.support.data import make_rows
    from tests.support.params import tiny_params
    from tests.support.repos import git_repo, sh, write_project

    params = tiny_params(tiny_model)
    params["ensemble"]["members"]["x; touch PWNED; echo"] = {"kind": "tfidf"}
    root = git_repo(write_project(tmp_path, params, make_rows(30)))
    done = sh(["dvc", "repro"], root, check=False)
    assert done.returncode != 0 and not (root / "PWNED").exists()
    assert "must match [A-Za-z0-9_-]+" in done.stdout + done.stderr  # our schema's refusal, before any work

