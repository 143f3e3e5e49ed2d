"""The package's layering, checked from its source: the core never imports a driver or the
API, the API never imports a driver, the drivers do not import each other, and no module
imports another in a cycle (README, "Architecture")."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "pyqcore"


def imports() -> dict[str, set[str]]:
    """Each pyqcore module, and the pyqcore modules it imports (TYPE_CHECKING ones too)."""
    found: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pyqcore"):
                deps.add(str(node.module))
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("pyqcore")}
        found[name] = deps - {name}
    return found


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in ("core", "api", "sync", "asyncio") else ""


def test_each_layer_imports_only_the_layers_below_it() -> None:
    forbidden = {"core": {"api", "sync", "asyncio"}, "api": {"sync", "asyncio"},
                 "sync": {"asyncio"}, "asyncio": {"sync"}}
    wrong = [(module, dep) for module, deps in imports().items() for dep in deps
             if layer(dep) in forbidden.get(layer(module), set())]
    assert wrong == []


def test_no_import_cycles() -> None:
    graph = imports()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = 1
        for dep in sorted(graph.get(module, set())):
            if dep not in graph or dep.startswith(module + "."):
                continue  # not a module of the package, or a submodule its package imports
            if state.get(dep) == 1:
                return [*path[path.index(dep):], dep] if dep in path else [module, dep]
            if dep not in state and (cycle := visit(dep, [*path, dep])):
                return cycle
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state:
            assert visit(module, [module]) is None


def test_the_wheel_lists_every_package() -> None:
    """setuptools ships only the packages pyproject.toml names: a new subpackage left out
    would be missing from the installed wheel."""
    import tomllib  # noqa: PLC0415 - only this test reads it (3.11+, the suite's Python)

    config = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    packages = {".".join(p.parent.relative_to(PACKAGE.parent).parts)
                for p in PACKAGE.rglob("__init__.py")}
    assert packages <= listed, sorted(packages - listed)
