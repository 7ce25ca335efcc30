"""The package's shape holds: no import cycle, a pure core, settings at the bottom, few top-level modules."""

from __future__ import annotations

import ast
from pathlib import Path

APP = Path(__file__).resolve().parents[1] / "app"
# Domain code that knows nothing of Kafka, Faust or HTTP.
PURE = ("app.core", "app.rules", "app.dialects", "app.analytics", "app.scheduling", "app.ledger", "app.simulation")
EDGES = ("aiokafka", "faust", "mode", "aiohttp", "rocksdict")


def module_name(path: Path) -> str:
    parts = path.relative_to(APP.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Every app module and the modules it imports (of app, and the top-level names of others)."""
    modules = {module_name(path): path for path in APP.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
                found.update(
                    f"{node.module}.{alias.name}" for alias in node.names if f"{node.module}.{alias.name}" in modules
                )
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        graph[name] = {m for m in found if m in modules and m != name} | {
            m.split(".")[0] for m in found if m not in modules
        }
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph.get(node, ()):
            if other not in graph:
                continue
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_itself_back() -> None:
    assert cycles(imports()) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_settings_import_nothing_of_app_but_errors() -> None:
    assert {m for m in imports()["app.settings"] if m.startswith("app")} <= {"app.errors"}


def test_the_pure_core_knows_no_kafka_faust_or_http() -> None:
    graph = imports()
    leaks = {
        name: sorted(graph[name] & set(EDGES)) for name in graph if name.startswith(PURE) and graph[name] & set(EDGES)
    }
    assert leaks == {}


def test_app_has_at_most_ten_top_level_modules() -> None:
    assert len(list(APP.glob("*.py"))) <= 10


def packages(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The same graph between app's top-level packages and modules (app.core, app.worker, ...)."""
    top = {name: ".".join(name.split(".")[:2]) for name in graph}
    folded: dict[str, set[str]] = {}
    for name, found in graph.items():
        folded.setdefault(top[name], set()).update(top[m] for m in found if m in top and top[m] != top[name])
    return folded


def test_no_package_imports_itself_back() -> None:
    assert cycles(packages(imports())) == []


def test_the_producer_and_the_worker_meet_only_on_kafka() -> None:
    graph = packages(imports())
    assert "app.worker" not in graph["app.producer"]
    assert "app.producer" not in graph["app.worker"]
