"""dvc.yaml must list every code file each stage runs, and agree with params.yaml and paths.py."""
import re

import pytest
import yaml

from finetune import paths
from finetune.params import load_params
from finetune.tasks import get_task, task_names
from tests.import_graph import module_file, project_imports
from tests.support import PROJECT

DVC = yaml.safe_load((PROJECT / "dvc.yaml").read_text())
STAGES = {name: stage.get("do", stage) for name, stage in DVC["stages"].items()}  # a foreach stage's template
TASK_MODULE = "finetune/tasks/${task}.py"
TASK_MODULES = sorted((PROJECT / "finetune/tasks").glob("*-*.py"))
# what any task module imports (every stage loads the task: params validation asks it about the model)
TASK_IMPORTS = set().union(*(project_imports(PROJECT, module) for module in TASK_MODULES)) - {
    str(module.relative_to(PROJECT)) for module in TASK_MODULES}


def verb_imports(stage: str) -> set[str]:
    """What the tasks' own verbs for this stage run (Task.verbs: a module per stage, imported by name)."""
    modules = {get_task(name).verbs[stage] for name in task_names() if stage in get_task(name).verbs}
    return set().union(set(), *(project_imports(PROJECT, module_file(PROJECT, module)) for module in modules))


def _module(stage: dict) -> str:
    match = re.fullmatch(r"python -m (stages\.\w+)", stage["cmd"])  # nothing interpolated: no params value in a shell
    assert match, f"unexpected cmd {stage['cmd']!r}"
    return match.group(1)


@pytest.mark.parametrize("name", STAGES)
def test_stage_deps_list_every_project_module_it_imports(name):
    stage = STAGES[name]
    module = _module(stage)
    needed = project_imports(PROJECT, PROJECT / (module.replace(".", "/") + ".py")) | TASK_IMPORTS | verb_imports(module.removeprefix("stages."))
    missing = needed - set(stage["deps"])
    assert not missing, f"stage {name!r} imports {sorted(missing)} but dvc.yaml does not list them as deps"
    assert TASK_MODULE in stage["deps"], f"stage {name!r} loads the task but does not list {TASK_MODULE}"
    listed_code = {d for d in stage["deps"] if d.endswith(".py")} - {TASK_MODULE}
    assert listed_code <= needed, f"stage {name!r} lists code it never imports: {sorted(listed_code - needed)}"
    assert not any("tasks/" in d and d not in (TASK_MODULE, "finetune/tasks/__init__.py") for d in stage["deps"]), \
        f"stage {name!r} names a task module itself: editing it would rerun other tasks' pipelines"


def test_the_import_graph_sees_imports_inside_functions():
    # params.py imports the task registry inside a function (it builds each task's schema on demand)
    assert "finetune/tasks/__init__.py" in project_imports(PROJECT, PROJECT / "finetune/params.py")


def test_no_stage_imports_another_stage_and_finetune_never_imports_stages():
    for module in [*PROJECT.glob("stages/*.py"), *PROJECT.glob("finetune/**/*.py")]:
        imported = project_imports(PROJECT, module) - {str(module.relative_to(PROJECT)), "stages/__init__.py"}
        stages = {path for path in imported if path.startswith("stages/")}
        assert not stages, f"{module.relative_to(PROJECT)} imports {sorted(stages)}"


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
    written = {paths.MEMBER_MODELS, paths.MEMBER_REPORTS, paths.MEMBER_SUMMARIES, paths.ENSEMBLE, paths.ENSEMBLE_METRICS, paths.INGESTED,
               paths.QUARANTINE / "ingest.csv", paths.QUARANTINE / "preprocess.csv", paths.PREPARED, paths.MODEL, paths.INGEST_SUMMARY,
               paths.PREPROCESS_SUMMARY, paths.TRAIN_SUMMARY, paths.TRAIN_LIVE, paths.METRICS, paths.EVALUATION, paths.REPORT_HTML,
               paths.COMPRESSED, paths.COMPRESS, paths.COMPRESS_METRICS, paths.EXPLAIN, paths.EXPLAIN_METRICS}
    assert {str(p) for p in written} == declared


def test_a_crafted_member_name_never_reaches_a_shell(tmp_path, tiny_model):
    from tests.support import git_repo, make_rows, sh, tiny_params, write_project

    params = tiny_params(tiny_model)
    params["ensemble"]["members"]["x; touch PWNED; echo"] = {"kind": "tfidf"}
    root = git_repo(write_project(tmp_path, params, make_rows(30)))
    done = sh(["dvc", "repro"], root, check=False)
    assert done.returncode != 0 and not (root / "PWNED").exists()
    assert "must match [A-Za-z0-9_-]+" in done.stdout + done.stderr  # our schema's refusal, before any work

