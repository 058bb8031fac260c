"""bakery's modules follow its one-way flow (load -> check -> resolve ->
build -> assemble -> output -> command line): no module imports one above
it, there are no import cycles, only the command line speaks click, and no
function grows past 60 lines."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

SRC = REPO / "src"

# Lowest first. A module may import from its own layer or any below it.
LAYERS = [
    {"errors", "resources", "layout", "stages"},
    {"fsutil", "targets", "templating", "remote"},
    {"loader", "keys", "secrets_store"},
    {"schema"},
    {"config", "defaults"},
    {"checks"},
    {"plan"},
    {"steps"},
    {"cloudconfig"},
    {"pipeline", "outputs", "dns", "reference", "starter", "status", "status_view"},
    {"cli", "__main__"},
]


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def bakery_imports(path: Path) -> set[str]:
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
            found |= {f"{target}.{a.name}" for a in node.names} if node.module is None else {target}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("bakery"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("bakery")}
    return {f for f in found if f != "bakery" and f != name}


def layer_of(module: str) -> int:
    short = module.removeprefix("bakery.")
    for index, layer in enumerate(LAYERS):
        if short in layer or short.split(".")[0] in layer:
            return index
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def graph() -> dict[str, set[str]]:
    return {module_name(p): bakery_imports(p) for p in (SRC / "bakery").rglob("*.py")}


def test_no_module_imports_one_above_it():
    wrong = [f"{module} (layer {layer_of(module)}) imports {dep} (layer {layer_of(dep)})"
             for module, deps in graph().items() if module != "bakery" for dep in deps
             if layer_of(dep) > layer_of(module)]
    assert wrong == []


def test_no_import_cycles():
    edges = graph()
    state: dict[str, str] = {}

    def visit(module, trail):
        if state.get(module) == "done":
            return
        assert state.get(module) != "open", " -> ".join(trail + [module])
        state[module] = "open"
        for dep in edges.get(module, ()):
            visit(dep, trail + [module])
        state[module] = "done"

    for module in edges:
        visit(module, [])


def test_only_the_command_line_imports_click():
    users = sorted(module_name(p) for p in (SRC / "bakery").rglob("*.py")
                   if any(isinstance(n, (ast.Import, ast.ImportFrom)) and "click" in
                          ([a.name for a in n.names] if isinstance(n, ast.Import) else [n.module or ""])
                          for n in ast.walk(ast.parse(p.read_text()))))
    assert users == ["bakery.cli"]


def test_no_function_is_longer_than_60_lines():
    long = []
    for path in (SRC / "bakery").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length >= 60:
                    long.append(f"{module_name(path)}.{node.name}: {length} lines")
    assert long == []
