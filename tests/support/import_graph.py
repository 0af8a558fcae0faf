"""Static import graph of the project's own modules (stages/, finetune/), read with ast: what code each DVC stage runs.

Two imports are dynamic and resolved here by rule: the registry loads a task's folder by name (finetune/tasks/__init__.py),
and a task runs its family's module named after the stage (finetune/families/task.py `_verb`). A module named after a
stage inside a family or a task folder (`explain.py`, `report.py`...) runs only in that stage, so the code of the other
stages never follows imports into it: editing a task's explainer reruns explain, not train.
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGES = ("stages", "finetune")
STAGES = ("ingest", "preprocess", "train", "evaluate", "member", "ensemble", "compress", "explain", "report")


def module_file(root: Path, dotted: str) -> Path | None:
    path = root.joinpath(*dotted.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else None


def _package(root: Path, path: Path) -> list[str]:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return parts[:-1] if parts[-1] != "__init__" else parts[:-1]


def _stage_only(root: Path, path: Path) -> str | None:
    """The stage a module runs in alone: a module named after a stage inside finetune/families/ or finetune/tasks/."""
    relative = path.relative_to(root).parts
    return path.stem if relative[:2] in (("finetune", "families"), ("finetune", "tasks")) and path.stem in STAGES else None


def project_imports(root: Path, start: Path, stage: str | None = None) -> set[str]:
    """Every project file `start` needs at run time (itself, what it imports, transitively, including imports inside
    functions and the __init__.py of every package on the way). With `stage`, modules that run only in another stage
    are not followed."""
    seen: set[Path] = set()
    todo = [start]
    while todo:
        path = todo.pop()
        if path in seen or (stage and path != start and _stage_only(root, path) not in (None, stage)):
            continue
        seen.add(path)
        package = path.parent
        while (package / "__init__.py").is_file():
            todo.append(package / "__init__.py")
            package = package.parent
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            elif isinstance(node, ast.ImportFrom):  # relative: inside a task folder or a family
                base = _package(root, path)[: len(_package(root, path)) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
                names = [prefix, *(f"{prefix}.{alias.name}" for alias in node.names)]
            for name in names:
                if name.split(".")[0] in PACKAGES:
                    found = module_file(root, name)
                    if found:
                        todo.append(found)
    return {str(p.relative_to(root)) for p in seen}


def stage_code(root: Path, stage: str) -> dict[str, set[str]]:
    """{task: the project files stage `stage` runs for that task}: the stage's module, the task's folder (imported by
    the registry) and its family's module of that stage (run by the task's verb), each with what it imports."""
    from finetune.tasks import get_task, task_names

    needed = {}
    for name in task_names():
        family = module_file(root, f"{get_task(name).family}.{stage}")
        starts = [root / f"stages/{stage}.py", root / f"finetune/tasks/{name}/__init__.py", *([family] if family else [])]
        needed[name] = set().union(*(project_imports(root, start, stage) for start in starts))
    return needed
