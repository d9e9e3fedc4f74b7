"""The module graph of src/farmcli has no import cycle: function-level and typing-only (``TYPE_CHECKING``) imports
included. A cycle held open by a late import is still a cycle: the two modules cannot be understood, tested or moved
one without the other (docs/DESIGN.md, Layout)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def _modules() -> dict[str, Path]:
    mods = {}
    for f in (SRC / "farmcli").rglob("*.py"):
        parts = list(f.relative_to(SRC).with_suffix("").parts)
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return mods


def _imports(path: Path, mods: dict[str, Path]) -> set[str]:
    out: set[str] = set()
    stack: list[ast.AST] = [ast.parse(path.read_text())]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("farmcli"):
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                out.add(full if full in mods else node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("farmcli"))
        stack.extend(ast.iter_child_nodes(node))
    return {m for m in out if m in mods}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    mods = _modules()
    graph = {m: _imports(f, mods) - {m} for m, f in mods.items()}
    assert "farmcli.data.build" in graph["farmcli.sources"]  # the walk sees function-level imports
    assert "farmcli.model.farm" in graph["farmcli.model"]  # and typing-only ones
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_one():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
