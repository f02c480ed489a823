"""The rules of record declarations and type expressions (docs/language.md, "Records").

`collect_records` and `check_records` check the `record` declarations, their fields and their
defaults, `order_records` puts nested records first, and `resolve_type` resolves every type
written in the source. Like the other rule modules they work on the checker's state
(`checker._Checker`), which calls them as its own methods.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import ast, ir
from .diagnostics import Span, did_you_mean

if TYPE_CHECKING:
    from .checker import _Checker

PRIMITIVES: dict[str, ir.PrimType] = {
    "str": ir.STR, "int": ir.INT, "float": ir.FLOAT, "bool": ir.BOOL, "bytes": ir.BYTES,
    "time": ir.TIME,
}  # fmt: skip
BUILTIN_TYPE_NAMES = (*PRIMITIVES, "list", "Event", "any")


class _Bad:
    """A literal that does not fit a type."""


_BAD = _Bad()


_WHERE = {
    "field": "field type", "topic": "topic's value type", "key": "topic's key type",
    "inner-field": "field type", "inner-topic": "topic's value type",
    "inner-key": "topic's key type", "return": "return type", "inner-return": "return type",
    "inner": "type argument",
}  # fmt: skip


def _lit_type_name(lit: ast.Default) -> str:
    return {ast.StrLit: "str", ast.IntLit: "int", ast.FloatLit: "float", ast.BoolLit: "bool",
            ast.NullLit: "null", ast.ListLit: "a list"}[type(lit)]  # fmt: skip


def collect_records(c: _Checker, decls: list[ast.RecordDecl]) -> None:
    for decl in decls:
        name = decl.name.text
        if name in BUILTIN_TYPE_NAMES:
            c.error(
                decl.name.span,
                "E207",
                f"'{name}' is a built-in type and cannot name a record",
            )
        elif name in c.records:
            c.error(
                decl.name.span,
                "E207",
                f"record '{name}' is already declared",
                notes=c.first_here(c.records[name].name.span, f"record '{name}'"),
            )
        else:
            c.records[name] = decl


def check_records(c: _Checker, decls: list[ast.RecordDecl]) -> tuple[ir.Record, ...]:
    built: dict[str, ir.Record] = {}
    for decl in decls:
        if c.records.get(decl.name.text) is not decl:
            continue
        fields: dict[str, ir.Field] = {}
        seen: dict[str, Span] = {}
        for f in decl.fields:
            if f.name.text in seen:
                c.error(
                    f.name.span,
                    "E207",
                    f"record {decl.name.text} already has a field '{f.name.text}'",
                    notes=c.first_here(seen[f.name.text], f"field '{f.name.text}'"),
                )
                continue
            seen[f.name.text] = f.name.span
            ftype = c.resolve_type(f.type, "field")
            default = None
            if f.default is not None and ftype is not None:
                default = c.check_default(f, ftype)
            if ftype is not None:
                fields[f.name.text] = ir.Field(f.name.text, ftype, default)
                c.field_spans[(decl.name.text, f.name.text)] = f.type.span
            else:
                c.broken_fields.add((decl.name.text, f.name.text))
        c.record_fields[decl.name.text] = fields
        built[decl.name.text] = ir.Record(decl.name.text, tuple(fields.values()))
    return c.order_records(built)


def order_records(c: _Checker, built: dict[str, ir.Record]) -> tuple[ir.Record, ...]:
    """Nested records first (a depth-first post-order), reporting any nesting cycle."""
    order: list[ir.Record] = []
    state: dict[str, int] = {}  # 1: being visited, 2: done

    def nested(t: ir.Type) -> list[str]:
        if isinstance(t, ir.RecordType):
            return [t.name]
        if isinstance(t, ir.ListType):
            return nested(t.item)
        if isinstance(t, ir.OptionalType):
            return nested(t.inner)
        return []

    def visit(root: str) -> None:
        # Depth-first post-order with an explicit stack: a chain of thousands of nested
        # records must not hit Python's recursion limit.
        if state.get(root) == 2 or root not in built:
            return
        state[root] = 1
        path = [root]
        stack = [
            iter(
                [(f, inner) for f in built[root].fields for inner in nested(f.type)]
            )
        ]
        while stack:
            step = next(stack[-1], None)
            if step is None:
                stack.pop()
                done = path.pop()
                state[done] = 2
                order.append(built[done])
                continue
            f, inner = step
            name = path[-1]
            if state.get(inner) == 1:
                cycle = " -> ".join([*path[path.index(inner) :], inner])
                c.error(c.field_spans[(name, f.name)], "E313",
                           f"record {name} contains itself through field '{f.name}'",
                           [f"the records nest in a cycle: {cycle}",
                            "a record cannot contain itself, not even through an "
                            "optional field or a list"])  # fmt: skip
            elif state.get(inner) != 2 and inner in built:
                state[inner] = 1
                path.append(inner)
                stack.append(iter([(g, x) for g in built[inner].fields
                                   for x in nested(g.type)]))  # fmt: skip

    for name in built:
        visit(name)
    return tuple(order)


def check_default(c: _Checker, f: ast.FieldDecl, ftype: ir.Type) -> ir.Default | None:
    d = f.default
    if isinstance(d, ast.ListLit):
        base = ftype.inner if isinstance(ftype, ir.OptionalType) else ftype
        if not isinstance(base, ir.ListType):
            c.bad_default(d.span, ftype, "a list")
            return None
        values: list[ir.Scalar] = []
        for item in d.items:
            v = c.literal_value(item, base.item)
            if isinstance(v, _Bad):
                c.error(
                    item.span,
                    "E312",
                    f"an item of the default does not match the field's type {ftype}",
                    [f"expected {base.item}, found {_lit_type_name(item)}"],
                )
                return None
            values.append(v)
        return ir.Default(tuple(values))
    assert d is not None
    v = c.literal_value(d, ftype)
    if isinstance(v, _Bad):
        c.bad_default(d.span, ftype, _lit_type_name(d))
        return None
    return ir.Default(v)


def literal_value(c: _Checker, lit: ast.Literal, t: ir.Type) -> ir.Scalar | _Bad:
    if isinstance(lit, ast.NullLit):
        return None if isinstance(t, ir.OptionalType) else _BAD
    base = t.inner if isinstance(t, ir.OptionalType) else t
    if isinstance(lit, ast.BoolLit):
        return lit.value if base == ir.BOOL else _BAD
    if isinstance(lit, ast.IntLit):
        if base == ir.INT:
            return lit.value
        return float(lit.value) if base == ir.FLOAT else _BAD
    if isinstance(lit, ast.FloatLit):
        return lit.value if base == ir.FLOAT else _BAD
    return lit.value if base == ir.STR else _BAD


def bad_default(c: _Checker, span: Span, expected: ir.Type, found: str) -> None:
    c.error(
        span,
        "E312",
        f"the default does not match the field's type {expected}",
        [f"expected {expected}, found {found}"],
    )


# ---- types

def resolve_type(c: _Checker, t: ast.TypeExpr, where: str) -> ir.Type | None:
    """Resolve a type expression. `where`: "field", "topic", "key", "param" or "return"."""
    if isinstance(t, ast.TupleTypeExpr):
        if where not in ("param", "return"):
            c.error(
                t.span,
                "E314",
                f"a tuple type cannot be used as a {_WHERE[where]}",
                ["tuples only appear as hook parameters, after enumerate or items"],
            )
            return None
        items = [c.resolve_type(i, "inner") for i in t.items]
        if any(i is None for i in items):
            return None
        result: ir.Type = ir.TupleType(tuple(i for i in items if i is not None))
        return ir.OptionalType(result) if t.optional else result
    name = t.name.text
    inner_where = "inner-" + where if not where.startswith("inner") else where
    resolved: ir.Type | None
    if name in ("list", "Event"):
        want = 1 if name == "list" else 2
        if len(t.args) != want:
            c.error(
                t.span,
                "E315",
                f"{name} takes {want} type argument{'s' if want > 1 else ''}, "
                f"found {len(t.args)}",
                ["write list[T]" if name == "list" else "write Event[K, V]"],
            )
            return None
        if name == "Event" and where not in ("param", "inner-param"):
            c.error(
                t.span,
                "E314",
                f"Event cannot be used as a {_WHERE[where]}",
                ["Event[K, V] is only a hook parameter, after `events`"],
            )
            return None
        args = [c.resolve_type(a, inner_where) for a in t.args]
        if any(a is None for a in args):
            return None
        first, last = args[0], args[-1]
        assert first is not None and last is not None
        resolved = (
            ir.ListType(first) if name == "list" else ir.EventType(first, last)
        )
    elif t.args and (name in PRIMITIVES or name == "any" or name in c.records):
        c.error(t.span, "E315", f"{name} takes no type arguments")
        return None
    elif name in PRIMITIVES:
        resolved = PRIMITIVES[name]
    elif name == "any":
        if where not in ("param", "inner-param"):
            c.error(
                t.span,
                "E314",
                f"any cannot be used as a {_WHERE[where]}",
                ["any is only a hook parameter type: the hook accepts anything"],
            )
            return None
        resolved = ir.AnyType()
    elif name in c.records:
        c.resolved(t.name.span, "record", name)
        resolved = ir.RecordType(name)
    else:
        c.error(
            t.name.span,
            "E202",
            f"unknown type '{name}'",
            # `lst[str]` is a misspelt generic type, whatever else it is close to.
            (t.args and did_you_mean(name, ["list", "Event"]))
            or did_you_mean(name, [*c.records, *BUILTIN_TYPE_NAMES]),
        )
        return None
    if t.optional:
        if isinstance(
            resolved, ir.OptionalType
        ):  # pragma: no cover - grammar has one ?
            return resolved
        return ir.OptionalType(resolved)
    return resolved
