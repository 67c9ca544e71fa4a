"""The structure of the package, held by a test: which package may import which.

A package imports only packages of its own layer or below (never one above), no two packages
import each other (directly or round a cycle), and no package imports another's private names
(``_name``). Every import counts: module level, inside functions and under TYPE_CHECKING,
since an import hidden in a function is a dependency all the same. The README's layout
section shows the same layers.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "slimkit"

# bottom to top; a package may import its own layer and the layers below
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("base", ("errors", "config", "registry", "io", "_deps", "_lazy", "progress", "model",
              "selector", "hardware")),
    ("inputs", ("data", "load")),
    ("runtimes", ("runtime",)),
    ("export", ("export",)),
    ("measure", ("evaluate", "analyse", "parallel", "bench")),
    ("graph", ("graph",)),
    ("train", ("train",)),
    ("zoo", ("zoo",)),
    ("techniques", ("prune", "quantize", "distill", "cluster", "lowrank", "compact", "llm")),
    ("workflows", ("recipe", "search", "advise", "serve")),
    ("report", ("report",)),
    ("apps", ("demo", "cli", "testing", "__init__", "__main__")),
)
LAYER_OF = {package: i for i, (_, packages) in enumerate(LAYERS) for package in packages}


def package_of(module: str) -> str:
    """``slimkit.prune.api`` -> ``prune``; ``slimkit`` itself -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


@lru_cache(maxsize=1)
def imports() -> list[tuple[str, str, str, tuple[str, ...]]]:
    """(importing module, its package, imported module, names) for every slimkit import."""
    rows = []
    for path in SRC.rglob("*.py"):
        module = ".".join(path.relative_to(SRC.parent).with_suffix("").parts)
        module = module.removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                    and node.module.split(".")[0] == "slimkit":
                rows.append((module, package_of(module), node.module,
                             tuple(a.name for a in node.names)))
            elif isinstance(node, ast.Import):
                rows += [(module, package_of(module), a.name, ()) for a in node.names
                         if a.name.split(".")[0] == "slimkit"]
    return rows


def package_edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for _, package, target, names in imports():
        targets = {package_of(target)}
        if target == "slimkit":  # from slimkit import prune -> the subpackage
            targets = {n for n in names if n in LAYER_OF} or {"__init__"}
        edges[package] |= targets - {package}
    return edges


def test_every_package_has_a_layer():
    packages = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    packages |= {p.stem for p in SRC.glob("*.py")}
    assert sorted(packages - set(LAYER_OF)) == []


def test_imports_only_point_down():
    wrong = sorted(f"{package} ({LAYERS[LAYER_OF[package]][0]}) imports {target} "
                   f"({LAYERS[LAYER_OF[target]][0]})"
                   for package, targets in package_edges().items() for target in targets
                   if LAYER_OF[target] > LAYER_OF[package])
    assert wrong == []


def test_no_cycle_between_packages():
    edges = package_edges()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[str] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*path[path.index(nxt):], nxt]))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for start in sorted(edges):
        if start not in state:
            visit(start, [start])
    assert cycles == []


def test_no_cycle_between_modules_of_a_package():
    # imports under TYPE_CHECKING are annotations only; every other import is a dependency,
    # also one hidden in a function
    edges: dict[str, set[str]] = defaultdict(set)
    for path in SRC.rglob("*.py"):
        module = ".".join(path.relative_to(SRC.parent).with_suffix("").parts)
        module = module.removesuffix(".__init__")
        tree = ast.parse(path.read_text(encoding="utf-8"))
        typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                       and "TYPE_CHECKING" in ast.unparse(block.test)
                       for n in ast.walk(block)}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and id(node) not in typing_only \
                    and node.module.startswith("slimkit.") and node.module != module \
                    and package_of(node.module) == package_of(module) \
                    and node.module.count(".") >= 2 and module.count(".") >= 2:
                edges[module].add(node.module)
    cycles = []
    for start in sorted(edges):
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in edges.get(node, ()):
                if nxt == start:
                    cycles.append(" -> ".join([*path, nxt]))
                elif nxt not in path and len(path) < 6:
                    stack.append((nxt, [*path, nxt]))
    assert cycles == []


def test_no_package_imports_another_packages_private_names():
    private = sorted(f"{module} imports {target}.{name}"
                     for module, package, target, names in imports() for name in names
                     if name.startswith("_") and package_of(target) != package
                     and LAYERS[LAYER_OF[package_of(target)]][0] != "base")
    assert private == []


def test_the_loader_knows_no_technique():
    techniques = set(dict(LAYERS)["techniques"]) | {"zoo"}
    assert package_edges()["load"] & techniques == set()


def test_the_readme_shows_these_layers():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("## Layout", 1)[1].split("```", 2)[1]
    shown = [line.split(":", 1)[0].strip() for line in block.strip().splitlines()]
    assert shown == [name for name, _ in reversed(LAYERS)]
    for name, packages in LAYERS:
        line = next(row for row in block.splitlines() if row.strip().startswith(name + ":"))
        listed = set(re.findall(r"[\w]+", line.split(":", 1)[1]))
        assert {p for p in packages if not p.startswith("_")} <= listed, name
