"""The package's shape, checked: no import cycles, hooks only in the entry point, no branch on
an engine's name outside engines/, and a plugin import that does not load the heavy libraries."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "pytest_mi300x"
HEAVY = ("aiohttp", "numpy", "openai", "matplotlib", "ruptures", "prometheus_client", "scipy")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def package_imports(path: Path) -> set[str]:
    """Modules of the package that ``path`` imports, at import time or inside a function
    (an import deferred into a function hides a cycle, it does not remove it); imports
    for type checkers only (``if TYPE_CHECKING:``) do not count."""
    out: set[str] = set()
    stack: list[ast.AST] = [ast.parse(path.read_text())]
    while stack:
        node = stack.pop()
        if _type_checking_only(node):
            continue
        stack.extend(ast.iter_child_nodes(node))
        if isinstance(node, ast.ImportFrom) and node.module and \
                node.module.startswith("pytest_mi300x"):
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                out.add(candidate if (PACKAGE.parent / (candidate.replace(".", "/") + ".py"))
                        .exists() else node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("pytest_mi300x"))
    return out


def test_no_import_cycles() -> None:
    graph = {module_name(p): package_imports(p) for p in PACKAGE.rglob("*.py")}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in graph.get(node, ()):
            if state.get(dep) == 1:
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep in graph and not state.get(dep):
                visit(dep, [*stack, dep])
        state[node] = 2

    for module in graph:
        if not state.get(module):
            visit(module, [module])
    assert cycles == []


def test_the_entry_point_holds_hooks_only() -> None:
    tree = ast.parse((PACKAGE / "plugin" / "hooks.py").read_text())
    functions = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
    assert functions and all(name.startswith("pytest_") for name in functions), functions
    assert not [n for n in tree.body if isinstance(n, ast.ClassDef)]


def test_no_branch_on_an_engine_name_outside_engines() -> None:
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if "engines" in path.relative_to(PACKAGE).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                names = [c.value for c in (node.left, *node.comparators)
                         if isinstance(c, ast.Constant)]
                if {"vllm", "tgi"} & set(names):
                    offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert offenders == []


def test_importing_the_plugin_loads_no_heavy_library() -> None:
    code = ("import sys, json; import pytest_mi300x.plugin.hooks; "
            f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True,
                                       text=True, check=True).stdout)
    assert loaded == []


def test_the_modules_pyproject_names_exist() -> None:
    import re

    named = re.findall(r"pytest_mi300x/[\w/]+\.py", (PACKAGE.parent / "pyproject.toml").read_text())
    assert named and [n for n in named if not (PACKAGE.parent / n).is_file()] == []
