"""The house's imports run one way: every ``import`` in recsys/ and web/, those inside functions
included, makes a graph with no circle, and the layers contract (setup.cfg) holds.

    python -m tests.test_layers        # prints the graph's size and its circles, if any
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("recsys", "web")


def modules(root: Path = ROOT) -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (root / package).rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """module -> the project modules it imports, anywhere in its code.

    ``from a import b`` counts as importing ``a.b`` when that is a module, else ``a``.
    """
    known = modules(root)

    def resolve(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = defaultdict(set)
    for module, path in known.items():
        graph[module]  # noqa: B018 - every module is a node
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package
                    for _ in range(node.level - 1):
                        parent = parent.rpartition(".")[0]
                    base = f"{parent}.{base}" if base else parent
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
            else:
                continue
            for name in names:
                target = resolve(name)
                if target is not None and target != module:
                    graph[module].add(target)
    return dict(graph)


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def report(graph: dict[str, set[str]]) -> str:
    found = circles(graph)
    lines = [f"{len(graph)} modules, {sum(map(len, graph.values()))} imports, {len(found)} circle(s)"]
    lines += ["circle: " + " -> ".join(c) for c in found]
    return "\n".join(lines)


def test_no_module_imports_its_way_back_to_itself():
    graph = import_graph()
    assert len(graph) > 50 and not circles(graph), report(graph)


def test_the_check_finds_a_circle_through_an_import_inside_a_function(tmp_path):
    for package in PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "recsys" / "low.py").write_text("def late():\n    from recsys.high import x\n")
    (tmp_path / "recsys" / "high.py").write_text("from . import low\nx = 1\n")
    (tmp_path / "web" / "page.py").write_text("from recsys import high\n")
    graph = import_graph(tmp_path)
    assert graph["web.page"] == {"recsys.high"}
    assert circles(graph) == [["recsys.high", "recsys.low"]]


def test_the_layers_contract_holds():
    linter = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(linter)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "0 broken" in proc.stdout


if __name__ == "__main__":
    print(report(import_graph()))
