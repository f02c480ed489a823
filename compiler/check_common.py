"""What the checker's rule modules share: the state of a pipeline walk and small helpers.

It sits below `checker` and its rule modules (check_records, check_ops, check_expr, check_state,
check_join, check_time) so that they can all import it without an import cycle.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from . import ast, ir
from .diagnostics import Span

KEY_TYPES = (ir.STR, ir.INT, ir.BYTES)


# The parts of an element an expression sees, each with its name (None: unnamed): the element
# itself, and after a join the row it found.
Scope = tuple[tuple[str | None, ir.Type], ...]


@dataclass
class _Stream:
    """What flows at one point of a pipeline. `None` types are unknown after an error."""

    elem: ir.Type | None
    key: ir.Type | None
    topic: str  # the name of the current topic, for repartition topic names
    partitions: int
    mode: str = "stream"  # "stream", "items", "events", or "done" after `to`/`sink`
    mode_op: str = ""  # the operation that set the mode, for messages
    inputs: tuple[int, ...] = ()  # the partition counts of the topics the current step reads
    # The names of the element's parts for `where`/`select`: (the `as` name,) or, after a
    # join, (the element's name, the row's name); () when nothing is named. Names hold while
    # the element keeps its type.
    names: tuple[str | None, ...] = ()
    joined: bool = False  # the element is the (element, row) pair of a join


@dataclass
class _HookInfo:
    sig: ast.HookSig
    module: str
    params: tuple[ir.Type | None, ...]
    returns: ir.Type | None
    has_return: bool
    is_async: bool = False
    call_proven: bool = False  # see ir.Hook


@dataclass(slots=True)  # one per repartition topic: tens of thousands in a big program
class _TopicInfo:
    topic: ir.Topic
    span: Span | None
    first_use: str = ""  # for implicit topics: where they were first named


_NULL = ir.OptionalType(
    ir.AnyType()
)  # the type of `null` until it meets the other side


def _accepts(param: ir.Type, actual: ir.Type) -> bool:
    """Whether a hook parameter of type `param` accepts `actual`; `any` matches anything."""
    if isinstance(param, ir.AnyType):
        return True
    if isinstance(param, ir.OptionalType) and not isinstance(actual, ir.OptionalType):
        return _accepts(param.inner, actual)  # a parameter that takes T? also takes T
    if type(param) is not type(actual):
        return False
    if isinstance(param, ir.ListType):
        return _accepts(param.item, actual.item)  # type: ignore[union-attr]
    if isinstance(param, ir.OptionalType):
        return _accepts(param.inner, actual.inner)  # type: ignore[union-attr]
    if isinstance(param, ir.TupleType):
        items = actual.items  # type: ignore[union-attr]
        return len(param.items) == len(items) and all(
            _accepts(p, a) for p, a in zip(param.items, items, strict=True)
        )
    if isinstance(param, ir.EventType) and isinstance(actual, ir.EventType):
        return _accepts(param.key, actual.key) and _accepts(param.value, actual.value)
    return param == actual


def _is_null(e: ir.Expr) -> bool:
    return isinstance(e, ir.Const) and e.value is None and e.type == _NULL


def _show(t: ir.Type | None) -> str:
    return "unknown values" if t is None else str(t)


def _n(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


_COMMENT_OR_STRING = re.compile(r'"[^"\\\n]*(?:\\.[^"\\\n]*)*"|#[^\n]*')  # unrolled: linear


def _collapse(text: str) -> str:
    """Source text without comments, whitespace runs collapsed to one space."""
    text = _COMMENT_OR_STRING.sub(
        lambda m: m.group(0) if m.group(0)[0] == '"' else " ", text
    )
    return " ".join(text.split())
