"""The rules of `select` and joins (docs/language.md, "Joins and select").

`op_select` checks a `select R { field = EXPR, ... }` step where the checker's pipeline walk
meets it. Like check_state and check_time, it works on the checker's state
(`checker._Checker`): every problem is reported and the walk carries on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import ast, ir
from .diagnostics import Span, did_you_mean

if TYPE_CHECKING:
    from .checker import _Checker, _Stream


def op_select(c: _Checker, op: ast.SelectOp, s: _Stream, agent: ast.AgentDecl) -> ir.Op | None:
    from .checker import _collapse, _is_null

    name = op.record.text
    if name not in c.records:
        c.error(op.record.span, "E202", f"unknown record '{name}'",
                did_you_mean(name, list(c.records)))  # fmt: skip
        s.elem = None
        return None
    c.resolved(op.record.span, "record", name)
    target = c.record_fields.get(name, {})
    elem, names = s.elem, s.names
    if elem is not None and not isinstance(elem, ir.RecordType) and not s.joined:
        c.error(op.span, "E309", f"select needs a stream of records, but the stream carries "
                f"{elem}", ["use `process` with a hook for other elements"])  # fmt: skip
        elem = None
    scope = None if elem is None else c.scope(s)
    given: dict[str, Span] = {}
    values: list[tuple[str, ir.Expr]] = []
    ok = True
    for f in op.fields:
        field = f.name.text
        if field in given:
            c.error(f.name.span, "E207", f"select gives field '{field}' twice",
                    notes=c.first_here(given[field], f"field '{field}'", "given"))  # fmt: skip
            ok = False
            continue
        given[field] = f.name.span
        declared = target.get(field)
        if declared is None and (name, field) not in c.broken_fields:
            c.error(f.name.span, "E201", f"record {name} has no field '{field}'",
                    did_you_mean(field, target))  # fmt: skip
        if declared is not None:
            c.resolved(f.name.span, "field", name, field)
        if scope is None:
            continue
        typed = c.check_expr(f.value, scope)
        if typed is None or declared is None:
            ok = False
            continue
        written = _collapse(c.module.text[f.value.span.start : f.value.span.end])
        if _is_null(typed):
            if not isinstance(declared.type, ir.OptionalType):
                c.error(f.value.span, "E327", f"field '{field}' of {name} is {declared.type}, "
                        "which cannot be null", [f"declare it as {declared.type}? in record "
                                                 f"{name}, or give it a value"])  # fmt: skip
                ok = False
                continue
            typed = ir.Const(None, declared.type)
        elif not _fits(typed.type, declared.type):
            if isinstance(typed.type, ir.OptionalType) and _fits(typed.type.inner,
                                                                   declared.type):  # fmt: skip
                hints = [f"declare the field as {declared.type}? in record {name}"]
                if isinstance(typed, ir.FieldRef) and (typed.root or len(typed.path) > 1):
                    hints.append("a path through an optional record (such as a left join's "
                                 "row) is null when the record is")  # fmt: skip
                c.error(f.value.span, "E327", f"{written} may be null, but field '{field}' of "
                        f"{name} is {declared.type}", hints)  # fmt: skip
            else:
                c.error(f.value.span, "E326", f"{written} is {typed.type}, but field "
                        f"'{field}' of {name} is {declared.type}",
                        [f"expected {declared.type}, found {typed.type}"])  # fmt: skip
            ok = False
            continue
        values.append((field, typed))
    missing = [f.name for f in target.values()
               if f.name not in given and f.default is None
               and not isinstance(f.type, ir.OptionalType)]  # fmt: skip
    if missing:
        listed = ", ".join(f"'{m}'" for m in missing)
        c.error(op.record.span, "E325", f"select {name} leaves required "
                f"field{'s' if len(missing) > 1 else ''} {listed} unset",
                [f"give every field without a default a value: `{missing[0]} = ...`",
                 "optional fields (T?) and fields with a default may be left out"])  # fmt: skip
        ok = False
    s.elem, s.names, s.joined = ir.RecordType(name), (), False
    if not ok or elem is None or s.key is None:
        return None
    text = _collapse(c.module.text[op.span.start : op.span.end])
    return ir.Select(name, tuple(values), text, names, s.elem, s.key)


def _fits(value: ir.Type, field: ir.Type) -> bool:
    """Whether a value of type `value` may fill a field of type `field`: the same type, an int
    for a float, and anything that fits T for a T?."""
    if value == field or (value == ir.INT and field == ir.FLOAT):
        return True
    if isinstance(field, ir.OptionalType):
        inner = value.inner if isinstance(value, ir.OptionalType) else value
        return _fits(inner, field.inner)
    return False
