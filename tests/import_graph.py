"""Static import graph of the project's own modules (stages/, finetune/), read with ast."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGES = ("stages", "finetune")


def module_file(root: Path, dotted: str) -> Path | None:
    path = root.joinpath(*dotted.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else None


def project_imports(root: Path, start: Path) -> set[str]:
    """Every project file `start` needs at run time (itself, what it imports, transitively,
    including imports inside functions and the __init__.py of every package on the way)."""
    seen: set[Path] = set()
    todo = [start]
    while todo:
        path = todo.pop()
        if path in seen:
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
            for name in names:
                if name.split(".")[0] in PACKAGES:
                    found = module_file(root, name)
                    if found:
                        todo.append(found)
    return {str(p.relative_to(root)) for p in seen}
