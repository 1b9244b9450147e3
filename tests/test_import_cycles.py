"""No import cycles inside the ``fastunlearn`` package.

Every module is parsed with :mod:`ast` (nothing is imported).  An edge ``A -> B`` is an
``import``/``from … import`` statement in ``A`` that names the fastunlearn module ``B``, at
module level or inside a function, class, ``try`` or ``if`` (a lazy import still runs, so it
counts).  ``from pkg import name`` is an edge to ``pkg.name`` when that is a module, else to
``pkg``; ``import a.b.c`` is an edge to ``a.b.c``.  Only imports under ``if TYPE_CHECKING:``
are skipped (they never run).  Importing a submodule also runs its parent packages'
``__init__``; those implicit edges are not counted (every package re-exporting its submodules
would otherwise be a cycle).  ``importlib.import_module("fastunlearn.x")`` with a literal
name is an import too and counts; a computed name (f-string) cannot be resolved and is skipped.

The strongly connected components of this graph (Tarjan) must all be single modules; a
failure lists each cycle with the import lines that make it.

Run ``python tests/test_import_cycles.py`` to print the cycles without pytest.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "fastunlearn"


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    path: str
    line: int
    text: str


def module_files(root: Path = ROOT, package: str = PACKAGE) -> dict[str, Path]:
    """Module name -> file for every ``.py`` file of ``package`` below ``root``."""
    out: dict[str, Path] = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def _literal_import_module(node: ast.AST) -> str | None:
    """``"a.b"`` for ``importlib.import_module("a.b")`` / ``import_module("a.b")``, else None."""
    if not isinstance(node, ast.Call) or not node.args:
        return None
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    arg = node.args[0]
    if name == "import_module" and isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value
    return None


def _runtime_imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import that can run (all depths; ``if TYPE_CHECKING:`` bodies skipped); a literal
    ``import_module("x")`` call is returned as the equivalent ``import x`` statement."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
            return
        literal = _literal_import_module(node)
        if literal is not None:
            found.append(
                ast.Import(
                    names=[ast.alias(name=literal)],
                    lineno=node.lineno,
                    end_lineno=node.end_lineno,
                    col_offset=node.col_offset,
                )
            )
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:  # the else branch does run
                visit(child)
            return
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _resolve_relative(module: str, is_package: bool, level: int, name: str | None) -> str:
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def import_edges(root: Path = ROOT, package: str = PACKAGE) -> list[Edge]:
    """All runtime import edges between modules of ``package`` (self-imports dropped)."""
    modules = module_files(root, package)
    edges: list[Edge] = []
    for module, path in modules.items():
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source, filename=str(path))
        lines = source.splitlines()
        rel = str(path.relative_to(root))
        for node in _runtime_imports(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                for alias in node.names:
                    name = alias.name
                    # ``import a.b.c`` where only ``a.b`` is ours (c an attribute): nearest module
                    while name and name not in modules and "." in name:
                        name = name.rsplit(".", 1)[0]
                    if name in modules:
                        targets.append(name)
            else:
                if node.level:
                    base = _resolve_relative(
                        module, path.name == "__init__.py", node.level, node.module
                    )
                else:
                    base = node.module or ""
                if base not in modules:
                    continue
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in modules else base)
            text = lines[node.lineno - 1].strip()
            if node.end_lineno and node.end_lineno > node.lineno:
                text = " ".join(s.strip() for s in lines[node.lineno - 1 : node.end_lineno])
            for target in dict.fromkeys(targets):
                if target != module:
                    edges.append(Edge(module, target, rel, node.lineno, text))
    return edges


def strongly_connected(nodes: list[str], edges: list[Edge]) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative), each sorted, in discovery order."""
    graph: dict[str, list[str]] = {n: [] for n in nodes}
    for e in edges:
        graph.setdefault(e.source, []).append(e.target)
        graph.setdefault(e.target, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(graph[start]))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(graph[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    component.append(top)
                    if top == node:
                        break
                out.append(sorted(component))
    return out


def find_cycles(root: Path = ROOT, package: str = PACKAGE) -> list[tuple[list[str], list[Edge]]]:
    """Each import cycle (component of >1 module) with the edges inside it."""
    edges = import_edges(root, package)
    components = strongly_connected(sorted(module_files(root, package)), edges)
    cycles = []
    for comp in components:
        if len(comp) > 1:
            members = set(comp)
            inside = [e for e in edges if e.source in members and e.target in members]
            cycles.append((comp, sorted(inside, key=lambda e: (e.path, e.line, e.target))))
    return sorted(cycles)


def format_cycles(cycles: list[tuple[list[str], list[Edge]]]) -> str:
    chunks = []
    for comp, inside in cycles:
        lines = [f"cycle of {len(comp)} modules: {', '.join(comp)}"]
        lines += [f"    {e.path}:{e.line}: {e.text}  [{e.source} -> {e.target}]" for e in inside]
        chunks.append("\n".join(lines))
    return "\n".join(chunks)


# ------------------------------------------------------------------------------------ tests


def test_checker_finds_a_cycle(tmp_path: Path) -> None:
    """The checker itself: planted cycles (through a lazy import, a relative import and a
    literal ``import_module``) are found; a ``TYPE_CHECKING`` import, ``from pkg import f``
    (an edge to the module ``pkg.f``, not to ``pkg``) and a computed name are not edges."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from pkg.a import f\n")
    (pkg / "a.py").write_text("from pkg.b import g\n\ndef f():\n    return g()\n")
    (pkg / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.c import h\n"
        "def g():\n    from pkg import a\n    return a\n"
    )
    (pkg / "c.py").write_text("from pkg.b import g\n")
    (pkg / "sub" / "__init__.py").write_text("from . import d\nfrom .. import b\n")
    (pkg / "sub" / "d.py").write_text("from pkg.sub import x\n")
    (pkg / "e.py").write_text(
        "import importlib\ndef load(n):\n    importlib.import_module('pkg.f')\n"
        "    importlib.import_module(f'pkg.{n}')\n"
    )
    (pkg / "f.py").write_text("from pkg.e import load\n")
    (pkg / "g.py").write_text("from pkg import f\n")
    cycles = find_cycles(tmp_path, "pkg")
    assert [comp for comp, _ in cycles] == [
        ["pkg.a", "pkg.b"], ["pkg.e", "pkg.f"], ["pkg.sub", "pkg.sub.d"]
    ]
    text = format_cycles(cycles)
    assert "pkg/b.py:5: from pkg import a" in text and "pkg/a.py:1: from pkg.b import g" in text
    assert "pkg.c" not in text


def test_no_import_cycles() -> None:
    modules = module_files()
    assert {"fastunlearn.data", "fastunlearn.models", "fastunlearn.evaluate"} <= set(modules)
    assert len(import_edges()) > len(modules)  # the scan sees the package's imports
    cycles = find_cycles()
    if cycles:
        pytest.fail(f"{len(cycles)} import cycle(s) in {PACKAGE}:\n{format_cycles(cycles)}",
                    pytrace=False)


def test_subpackages_import_in_a_fresh_interpreter() -> None:
    code = "import fastunlearn.data, fastunlearn.models, fastunlearn.evaluate"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]


if __name__ == "__main__":
    found = find_cycles()
    print(format_cycles(found) if found else "no import cycles")
    sys.exit(1 if found else 0)
