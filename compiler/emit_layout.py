"""Small pure helpers of code generation: statements laid out as black lays them out (so
formatting output that is already stable takes one pass), names of the variables a generated
function uses, and a table's window as a runtime call."""

from __future__ import annotations

import re
from collections.abc import Iterable

from . import ir
from .naming import Namer, snake

LINE_LENGTH = 100


def call_lines(callee: str, args: list[str]) -> tuple[str, ...]:
    """A call statement at module level, wrapped as black wraps it when too long."""
    one_line = f"{callee}({', '.join(args)})"
    if len(one_line) <= LINE_LENGTH:
        return (one_line,)
    inner = "    " + ", ".join(args)
    if len(inner) <= LINE_LENGTH:
        return (f"{callee}(", inner, ")")
    return (f"{callee}(", *(f"    {arg}," for arg in args), ")")


def import_lines(module: str, names: Iterable[str]) -> tuple[str, ...]:
    """`from module import a, b`, wrapped one name a line when too long, as black does."""
    names = list(names)
    if not names:
        return ()
    line = f"from {module} import {', '.join(names)}"
    if len(line) <= LINE_LENGTH:
        return (line,)
    return (f"from {module} import (", *(f"    {name}," for name in names), ")")


def loop_layout(target: str, chain: list[str]) -> tuple[str, ...]:
    """The agent's `async for` header in the layout black gives it, as lines.

    black would reach the same result from one long line, but formatting output that is
    already stable takes one pass instead of two: this halves the time to build programs with
    hundreds of agents. Layouts not reproduced here are left to black.
    """
    calls = "".join(f".{call}" for call in chain)
    one_line = f"    async for {target} in stream{calls}:"
    if len(one_line) <= LINE_LENGTH:
        return (one_line.strip(),)
    inner = f"        stream{calls}"
    head, tail = f"async for {target} in (", "):"
    if len(inner) <= LINE_LENGTH or len(chain) < 3:
        return (head, inner[4:], tail)
    return (head, f"    stream.{chain[0]}", *(f"    .{c}" for c in chain[1:]), tail)


def _record_name(t: ir.Type) -> str:
    while isinstance(t, ir.OptionalType):
        t = t.inner
    assert isinstance(t, ir.RecordType), t
    return t.name


_PLAIN_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")


def _window_call(window: ir.Window) -> str:
    """`Tumbling(size=60_000, grace=10_000)`: a table's window, in milliseconds."""
    if window.kind == "session":
        return f"Session(gap={window.size_ms:_}, grace={window.grace_ms:_})"
    if window.kind == "hopping":
        return (f"Hopping(size={window.size_ms:_}, advance={window.advance_ms:_}, "
                f"grace={window.grace_ms:_})")  # fmt: skip
    return f"Tumbling(size={window.size_ms:_}, grace={window.grace_ms:_})"


def _uses_time(annotations: Iterable[str]) -> bool:
    return any("Time" in re.split(r"[^A-Za-z0-9_]+", a) for a in annotations)


def _camel(name: str) -> str:
    """`totals_by_account` -> `TotalsByAccount`, for a table's state record."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("_") if part) or "Table"


def _named_after(record: str, scope: Namer) -> str:
    """`order` for an Order; `value` when the record's name would need mangling."""
    wanted = snake(record)
    if wanted.isidentifier() and wanted.isascii() and wanted not in scope.taken:
        candidate = Namer(set(scope.taken)).claim(wanted)
        if candidate == wanted:
            return scope.claim(wanted)
    return scope.claim("value")


def _strip(t: ir.Type) -> ir.Type:
    return t.inner if isinstance(t, ir.OptionalType) else t


def local_param(element: ir.Type, namer: Namer) -> str:
    scope = Namer(set(namer.taken))
    if isinstance(element, ir.RecordType):
        return _named_after(element.name, scope)
    return scope.claim("value")


def loop_targets(element: ir.Type, last_op: ir.Op | None, namer: Namer) -> list[str]:
    """Loop variables named after what they hold: `order`, `batch`, `i, order`, `key, order`."""
    scope = Namer(set(namer.taken))

    def one(t: ir.Type) -> str:
        if isinstance(t, ir.RecordType):
            return _named_after(t.name, scope)
        if isinstance(t, ir.ListType):
            return scope.claim("batch")
        if isinstance(t, ir.EventType):
            return scope.claim("event")
        return scope.claim("value")

    if isinstance(element, ir.TupleType):
        first = scope.claim("i" if isinstance(last_op, ir.Enumerate) else "key")
        return [first, *(one(t) for t in element.items[1:])]
    return [one(element)]
