"""The runtime's modules import one another without cycles: `App` is plain declarations, the
running `Worker` lives in its own module, and lower layers (conductor, stream, state) name the
worker only as a type."""

from __future__ import annotations

import ast
from pathlib import Path

RUNTIME = Path(__file__).resolve().parents[2] / "runtime" / "streamc_runtime"


def _module_level_imports() -> dict[str, set[str]]:
    """streamc_runtime module -> the runtime modules it imports when imported itself (module
    level, outside `if TYPE_CHECKING:`)."""
    modules: dict[str, Path] = {}
    for path in RUNTIME.rglob("*.py"):
        parts = path.relative_to(RUNTIME.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.parse(path.read_text()).body:
            if not isinstance(node, ast.ImportFrom) or not node.level:
                continue
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
            for candidate in [target, *(f"{target}.{a.name}" for a in node.names)]:
                if candidate in modules:
                    graph[name].add(candidate)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def test_runtime_modules_import_without_cycles() -> None:
    graph = _module_level_imports()
    assert "streamc_runtime.worker" in graph  # the walk found the package
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_app_declarations_do_not_import_the_running_worker() -> None:
    imported = _module_level_imports()["streamc_runtime.app"]
    assert not imported & {
        "streamc_runtime.worker",
        "streamc_runtime.conductor",
        "streamc_runtime.main",
    }, imported


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
