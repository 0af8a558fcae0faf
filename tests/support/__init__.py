"""Test helpers, by what they build: data.py (labelled data, images, a corpus), models.py (tiny models saved like a user's),
params.py (params of tiny runs of each task), repos.py (scratch projects and running the tools like a user)."""
from __future__ import annotations

import importlib
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


def task_module(task: str, name: str = ""):
    """A module of a task's folder (finetune/tasks/<task>/<name>.py): folder names hold hyphens, so `import` cannot name them."""
    return importlib.import_module(f"finetune.tasks.{task}" + (f".{name}" if name else ""))
