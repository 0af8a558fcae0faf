"""The task registry: one folder per task, finetune/tasks/<task>/, named exactly like params.yaml's `task` value and
holding in its __init__.py `TASK = <Task instance>` (finetune/families/task.py says what a task is).

`get_task(name)` imports the folder on first use, so a stage loads only its own task's code; dvc.yaml lists
`finetune/tasks/${task}` as a dependency, so editing one task's folder reruns only that task's pipelines. Everything
only one task uses lives in its folder; nothing outside it imports from inside it (only this registry does, by name),
and no task folder imports another (python ../shared/tools/layer_check.py checks both).
"""
from __future__ import annotations

import functools
import importlib
import re
from pathlib import Path

from finetune.errors import UserError
from finetune.families.task import Task

FOLDER = Path(__file__).parent
TASK_NAME = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")


def task_names() -> list[str]:
    return sorted(path.name for path in FOLDER.iterdir() if (path / "__init__.py").is_file() and TASK_NAME.fullmatch(path.name))


@functools.cache
def get_task(name: str) -> Task:
    if not TASK_NAME.fullmatch(str(name)) or not (FOLDER / str(name) / "__init__.py").is_file():
        raise UserError(f"unknown task {name!r}; tasks: {task_names()} (one folder each: finetune/tasks/<task>/)")
    return importlib.import_module(f"finetune.tasks.{name}").TASK
