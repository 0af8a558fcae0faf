"""The architecture page's two pictures, drawn from the code so they cannot drift: `python tools/docs_pictures.py` writes
docs/img/dag.svg (dvc.yaml's stages, an arrow wherever a stage reads what another writes) and docs/img/layers.svg (the
packages, an arrow wherever one imports another at module level). `make docs` runs it; tests/tools/test_docs_pictures.py
fails when a committed picture differs from what this draws.

Drawn with matplotlib (already a dependency) in a longest-path layering: graphviz would draw nicer edges but is a
system package a clone may not have.
"""
from __future__ import annotations

import ast
import io
import sys
from collections import defaultdict
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def dag_edges(dvc_yaml: Path) -> dict[str, set[str]]:
    """stage -> the stages it reads from (a dep equal to, inside or above another stage's output)."""
    stages = yaml.safe_load(dvc_yaml.read_text(encoding="utf-8"))["stages"]
    name = {key: ("member (one per ensemble member)" if "foreach" in stage else key) for key, stage in stages.items()}

    def paths(stage: dict, kinds: tuple[str, ...]) -> list[str]:
        body = stage.get("do", stage)
        return [next(iter(p)) if isinstance(p, dict) else p for kind in kinds for p in body.get(kind, [])]

    outs = {key: [p.split("${")[0].rstrip("/") for p in paths(stage, ("outs", "metrics", "plots"))] for key, stage in stages.items()}
    edges: dict[str, set[str]] = {name[key]: set() for key in stages}
    for key, stage in stages.items():
        for dep in paths(stage, ("deps",)):
            dep = dep.split("${")[0].rstrip("/")
            for other, written in outs.items():
                if other != key and any(dep == w or dep.startswith(w + "/") or w.startswith(dep + "/") for w in written if w):
                    edges[name[key]].add(name[other])
    return edges


def layer_of(module: str) -> str:
    parts = module.split(".")
    if parts[0] in ("stages", "flows"):
        return parts[0] + "/"
    if len(parts) == 1 or parts[1] in ("errors", "io", "paths"):
        return "finetune/ (errors, io, paths)"
    if parts[1] == "stage":
        return "finetune/stage.py"
    if parts[1] == "tasks":
        return "finetune/tasks/<task>/" if len(parts) > 2 else "finetune/tasks/ (registry)"
    if parts[1] == "families" and len(parts) > 2 and parts[2] != "task":
        return f"finetune/families/{parts[2]}/"
    if (ROOT / "finetune" / parts[1]).is_dir():
        return f"finetune/{parts[1]}/"
    return "finetune/ (inference, serving, export, search)"


def layer_edges(root: Path = ROOT) -> dict[str, set[str]]:
    """package -> packages it imports at module level (imports inside functions are lazy: left out, as in layer_check)."""
    edges: dict[str, set[str]] = defaultdict(set)
    for path in sorted([*root.glob("stages/*.py"), *root.glob("flows/*.py"), *root.glob("finetune/**/*.py")]):
        parts = list(path.relative_to(root).with_suffix("").parts)
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mine = layer_of(module)
        edges[mine]
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            imported = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else [])
            for target in imported:
                if target.split(".")[0] in ("finetune", "stages", "flows") and (theirs := layer_of(target)) != mine:
                    edges[mine].add(theirs)
    return dict(edges)


def draw(edges: dict[str, set[str]], title: str) -> str:
    """An SVG: nodes in columns by longest path from the sources, an arrow from what is read to who reads it. Arrows a
    longer path already implies are left out (transitive reduction), or the picture is all arrows."""
    import matplotlib
    import networkx as nx

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    graph = reduced(edges)
    columns: dict[int, list[str]] = defaultdict(list)
    for depth, nodes in enumerate(nx.topological_generations(graph)):
        columns[depth] = sorted(nodes)
    tallest = max(len(c) for c in columns.values())
    plt.rcParams["svg.hashsalt"] = "finetune"  # stable ids: the same graph gives the same file
    plt.rcParams["svg.fonttype"] = "none"  # text stays text (searchable, small)
    figure, axes = plt.subplots(figsize=(3.1 * len(columns) + 1, 0.6 * tallest + 1))
    label = {}
    for x, nodes in columns.items():
        for i, node in enumerate(nodes):
            label[node] = axes.text(x, (len(nodes) - 1) / 2 - i, node, ha="center", va="center", fontsize=8,
                                    bbox={"boxstyle": "round,pad=0.35", "facecolor": "#e8f0fe", "edgecolor": "#4a6fa5"})
    for source, node in sorted(graph.edges):
        axes.annotate("", xy=(0, 0.5), xycoords=label[node], xytext=(1, 0.5), textcoords=label[source],
                      arrowprops={"arrowstyle": "->", "color": "#777", "lw": 0.8, "shrinkA": 4, "shrinkB": 4})
    axes.set_xlim(-0.7, len(columns) - 0.3)
    axes.set_ylim(-tallest / 2, tallest / 2)
    axes.set_title(title, fontsize=10)
    axes.axis("off")
    out = io.StringIO()
    figure.savefig(out, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    plt.close(figure)
    declaration, rest = out.getvalue().split("\n", 1)
    return f"{declaration}\n{drawn_from(graph)}\n{rest}"


def reduced(edges: dict[str, set[str]]):
    import networkx as nx

    graph = nx.DiGraph([(source, node) for node, inputs in edges.items() for source in inputs])
    graph.add_nodes_from(edges)
    reduction = nx.transitive_reduction(graph)
    reduction.add_nodes_from(graph)
    return reduction


def drawn_from(graph) -> str:
    """The graph a picture shows, as a comment inside it: what the freshness test compares (the drawing's coordinates
    may differ in the last digit between machines, the graph may not)."""
    return "<!-- drawn by tools/docs_pictures.py from: " + "; ".join(f"{a} -> {b}" for a, b in sorted(graph.edges)) + " -->"


GRAPHS = {"docs/img/dag.svg": (lambda root: dag_edges(root / "dvc.yaml"), "dvc.yaml: each stage right of the stages whose outputs it reads"),
          "docs/img/layers.svg": (layer_edges, "module-level imports: each package right of the packages it imports")}


def pictures(root: Path = ROOT) -> dict[str, str]:
    return {relative: draw(edges(root), title) for relative, (edges, title) in GRAPHS.items()}


def main() -> None:
    for relative, svg in pictures().items():
        target = ROOT / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(svg, encoding="utf-8")
        print(f"wrote {relative}")


if __name__ == "__main__":
    sys.exit(main())
