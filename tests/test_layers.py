"""The architecture as a test: imports run one way, no circles, no network in the pure core.

Layers, lowest first (docs/architecture.md): `planner.errors`; the model toolkit
(`planner.model`, `planner.modelbuild`); the pure planning core (`planner.planning`); fleet
I/O (`planner.fleet`); live re-planning (`planner.live`); fleets on this machine
(`planner.local`, `planner.testbed`); the commands (`planner.commands`, `planner.cli`). A
module imports its own layer or lower ones, never a higher one, and `node` never imports
`planner`. Every import statement counts: module level, inside functions and under
`TYPE_CHECKING`, since a maintainer reading the code sees each one as a dependency.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS: list[tuple[str, ...]] = [
    ("planner.errors",),
    ("planner.model", "planner.modelbuild"),
    ("planner.planning",),
    ("planner.fleet",),
    ("planner.live",),
    ("planner.local", "planner.testbed"),
    ("planner.commands", "planner.cli", "planner.__main__"),
]
# The pure layers stay off the network: not directly, and not through what they import.
NETWORK = ("zmq", "paho", "socket", "amqtt", "socketserver", "http", "urllib.request")
PURE = ("planner.errors", "planner.model", "planner.modelbuild", "planner.planning")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def sources() -> dict[str, Path]:
    return {module_name(p): p for pkg in ("node", "planner") for p in (ROOT / pkg).rglob("*.py")}


def imports(name: str, path: Path) -> Iterator[str]:
    """Every module `path` imports (absolute names; `from a import b` yields a.b if a
    module, else a)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([base] if base else []))
            yield base
            yield from (f"{base}.{a.name}" for a in node.names)


def graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports."""
    mods = sources()
    return {name: {t for t in imports(name, path) if t in mods and t != name}
            for name, path in mods.items()}


def layer_of(name: str) -> int | None:
    for i, group in enumerate(LAYERS):
        if any(name == g or name.startswith(g + ".") for g in group):
            return i
    return None


def test_every_planner_module_has_a_layer() -> None:
    loose = [n for n in sources() if n.startswith("planner.") and layer_of(n) is None]
    assert not loose, f"modules outside every layer (add them to LAYERS and the docs): {loose}"


def test_imports_run_one_way() -> None:
    wrong = []
    for name, targets in graph().items():
        here = layer_of(name)
        for t in targets:
            if name.startswith("node") and t.startswith("planner"):
                wrong.append(f"{name} -> {t} (node never imports planner)")
            elif here is not None and (there := layer_of(t)) is not None and there > here:
                wrong.append(f"{name} (layer {here}) -> {t} (layer {there})")
    assert not wrong, "imports against the layer order:\n" + "\n".join(sorted(wrong))


def test_no_import_circles() -> None:
    g = graph()
    edges = g
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
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
                circles.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    assert not circles, "import circles:\n" + "\n".join(" <-> ".join(c) for c in circles)


@pytest.mark.parametrize("top", PURE)
def test_the_pure_layers_never_reach_the_network(top: str) -> None:
    mods = sources()
    g = graph()
    for name in [n for n in mods if n == top or n.startswith(top + ".")]:
        seen, todo = {name}, [name]
        while todo:  # everything `name` imports, transitively, inside the project
            for t in g[todo.pop()]:
                if t not in seen:
                    seen.add(t)
                    todo.append(t)
        for m in seen:
            bad = [i for i in imports(m, mods[m]) if i.split(".")[0] in NETWORK
                   or any(i == n or i.startswith(n + ".") for n in NETWORK)]
            assert not bad, f"{name} reaches the network through {m}: imports {bad}"


def test_the_layer_test_sees_imports() -> None:
    # guard against a vacuous pass: the graph must hold known edges of every kind
    g = graph()
    assert "planner.model.graph" in g["planner.model.cut"]
    assert "planner.planning.plan" in g["planner.planning.simulate"]
    assert any(t.startswith("node.wire") for t in g["planner.fleet.control"])
