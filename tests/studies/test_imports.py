"""Issue 15: the studies package has no import cycles (imports inside functions count too), and
the built-in studies are registered by importing the package, not by the registry."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import fastunlearn

ROOT = Path(fastunlearn.__file__).parent


def _graph() -> dict[str, set[str]]:
    mods = {}
    for p in ROOT.rglob("*.py"):
        parts = ["fastunlearn", *p.relative_to(ROOT).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = p
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                deps.add(node.module)
                deps.update(f"{node.module}.{a.name}" for a in node.names)
        graph[name] = {d for d in deps if d in mods and d != name}
    return graph


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), list(graph[start])
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(graph.get(m, ()))
    return seen


def test_no_studies_module_is_in_an_import_cycle():
    graph = _graph()
    studies = [m for m in graph if m.startswith("fastunlearn.studies")]
    assert "fastunlearn.studies.registry" in studies
    cyclic = [m for m in studies if m in _reachable(graph, m)]
    assert cyclic == []


def test_submodules_never_import_their_own_package():
    graph = _graph()
    offenders = [m for m, deps in graph.items()
                 if m.startswith("fastunlearn.studies.") and "fastunlearn.studies" in deps]
    assert offenders == []


def test_the_registry_imports_none_of_its_users():
    graph = _graph()
    assert _reachable(graph, "fastunlearn.studies.registry").isdisjoint(
        {"fastunlearn.studies", "fastunlearn.studies.base", "fastunlearn.studies.cost_quality"})


def test_importing_any_studies_module_registers_the_builtin_studies():
    code = ("from fastunlearn.studies.registry import list_studies; "
            "print(','.join(list_studies()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out.split(",") == ["collateral", "cost-quality", "cross-arch", "forget-scaling",
                              "layer-sensitivity"]
