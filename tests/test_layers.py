"""The package's layers: each subpackage imports only the ones below it (imports inside functions included), and
no module imports itself back through others. A new import that breaks the order fails here, naming it."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "ptrain"

# Bottom to top. A part may import its own modules and the parts of any earlier layer, never a later one nor
# another part of its own layer.
LAYERS = [
    {"errors"},
    {"files"},  # atomic writes, integrity, leftovers, the run lock
    {"config"},  # the typed tree, loading, checks, where a model comes from
    {"runtime"},  # the process and device: precision, Accelerator and engine, nodes, hardware, agreement
    {"data", "model"},
    {"fast_paths"},  # the fenced speed paths behind train.fast_paths
    {"tasks"},
    {"outputs"},  # exports, model card, tracking, run folders
    {"training"},
    {"inference"},
    {"experiments"},
    {"bench"},
    {"cli"},  # one command table
    {"__main__"},
]
RANK = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, name: str, modules: set[str]) -> set[str]:
    """The ptrain modules a module imports, at its top or inside functions."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join([*base, node.module] if node.module else base)
            # `from package import module` imports the module; `from module import name`, the module
            found.update(
                f"{module}.{alias.name}" if f"{module}.{alias.name}" in modules else module for alias in node.names
            )
    return {target for target in found if target.split(".")[0] == "ptrain"}


def graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    edges = {}
    for name, path in modules.items():
        targets = set()
        for target in imports(path, name, set(modules)):
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                targets.add(target)
        edges[name] = targets
    return edges


def part(module: str) -> str:
    return module.split(".")[1] if "." in module else "ptrain"


def test_every_part_has_a_layer():
    parts = {path.stem if path.is_file() else path.name for path in PACKAGE.iterdir()}
    parts -= {"__init__", "__pycache__"}
    assert parts == set(RANK), "a new top-level module or subpackage needs its place in LAYERS"


def test_each_part_imports_only_the_layers_below_it():
    wrong = [
        f"{module} imports {target} ({part(module)} is below {part(target)})"
        for module, targets in graph().items()
        for target in targets
        if part(module) in RANK and part(target) != part(module) and RANK[part(target)] >= RANK[part(module)]
    ]
    assert not wrong, "\n".join(sorted(wrong))


def test_no_module_imports_itself_back():
    edges = graph()
    state: dict[str, int] = {}  # 1 on the path being walked, 2 done

    def walk(module: str, path: list[str]) -> list[str] | None:
        state[module] = 1
        for target in sorted(edges[module]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target] if target in path else [*path, target]
            if target not in state and (cycle := walk(target, [*path, target])):
                return cycle
        state[module] = 2
        return None

    for module in sorted(edges):
        if module not in state and (cycle := walk(module, [module])):
            raise AssertionError("import cycle: " + " -> ".join(cycle))
