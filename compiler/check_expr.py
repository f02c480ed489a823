"""The rules of expressions (docs/language.md, "`where` expressions") and field paths.

`resolve_path` follows a field path through records, `check_expr` types an expression against
the element's parts (`scope`), and the null rule: a field that may be null must be tested
before it is compared or computed with, and a test proves it for the rest of an `and` chain.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

from . import ast, ir
from .check_common import _NULL, Scope, _is_null, _Stream
from .diagnostics import did_you_mean

if TYPE_CHECKING:
    from .checker import _Checker

NUMERIC = (ir.INT, ir.FLOAT)


def _path(names: Sequence[ast.Name]) -> tuple[str, ...]:
    return tuple(n.text for n in names)


def _not_null(e: ast.Expr, holds: bool) -> frozenset[tuple[str, ...]]:
    """Field paths proven not null when `e` evaluates to `holds`."""
    if isinstance(e, ast.UnaryExpr) and e.op == "not":
        return _not_null(e.operand, not holds)
    if not isinstance(e, ast.BinaryExpr):
        return frozenset()
    if e.op in ("and", "or"):
        if (
            e.op == "and"
        ) == holds:  # `a and b` true, or `a or b` false: both sides are known
            # A loop down the chain `a and b and c`, which may be any length.
            proven: frozenset[tuple[str, ...]] = frozenset()
            node: ast.Expr = e
            while isinstance(node, ast.BinaryExpr) and node.op == e.op:
                proven |= _not_null(node.right, holds)
                node = node.left
            return proven | _not_null(node, holds)
        return frozenset()
    if e.op in ("==", "!=") and (e.op == "!=") == holds:
        sides = (e.left, e.right)
        if any(isinstance(x, ast.NullLit) for x in sides):
            for x in sides:
                if isinstance(x, ast.FieldPath):
                    return frozenset([_path(x.names)])
    return frozenset()


def _strip(t: ir.Type) -> ir.Type:
    return t.inner if isinstance(t, ir.OptionalType) else t


def _show_expr(e: ir.Expr) -> str:
    if isinstance(e, ir.FieldRef):
        return "'" + ".".join(e.path) + "'"
    return str(e.type)


def _maybe_null_hint(t: ir.Type) -> list[str]:
    if isinstance(t, ir.OptionalType):
        return [f"{t} may be null: test it first, as in `x != null and x > 1`"]
    return []


def scope(c: _Checker, s: _Stream) -> Scope:
    """What names an expression may start with: the element's parts, each maybe named."""
    assert s.elem is not None
    if s.joined and isinstance(s.elem, ir.TupleType):
        return tuple(zip(s.names, s.elem.items, strict=True))
    return ((s.names[0] if s.names else None, s.elem),)


# ---- where expressions

def resolve_path(
    c: _Checker,
    names: Sequence[ast.Name],
    record: ir.Type,
    known: frozenset[tuple[str, ...]] = frozenset(),
    prefix: tuple[str, ...] = (),
    parts: tuple[str, ...] = (),
) -> ir.Type | None:
    """The type of `a.b.c` on a record; optional if any step on the way is optional.

    `known` holds paths a surrounding `x != null and ...` has shown are not null; `prefix`
    is the name the path was written after (`order` in `order.tip`), if any; `parts` the
    names the path could have started with instead (`payment` after a join), for hints.
    """
    current: ir.Type = record
    optional = False
    for i, n in enumerate(names):
        base = current.inner if isinstance(current, ir.OptionalType) else current
        if isinstance(current, ir.OptionalType):
            optional = True
        if not isinstance(base, ir.RecordType):
            c.error(n.span, "E201",
                       f"'{'.'.join(x.text for x in names[:i])}' is {current}, which has "
                       f"no fields")  # fmt: skip
            return None
        fields = c.record_fields.get(base.name, {})
        f = fields.get(n.text)
        if f is None and (base.name, n.text) in c.broken_fields:
            return None  # its type was already reported as unknown
        if f is None:
            c.error(
                n.span,
                "E201",
                f"record {base.name} has no field '{n.text}'",
                did_you_mean(n.text, [*fields, *parts] if i == 0 else fields),
            )
            return None
        c.resolved(n.span, "field", base.name, n.text)
        current = f.type
        # Narrow only the last field, and only if no optional record lies on the way: the
        # generated code reaches through optional records with conditional expressions,
        # which a type checker (mypy --strict on the worker) cannot narrow.
        if (
            i == len(names) - 1
            and not optional
            and isinstance(current, ir.OptionalType)
            and (*prefix, *_path(names)) in known
        ):
            current = current.inner
    if optional and not isinstance(current, ir.OptionalType):
        return ir.OptionalType(current)
    return current


def check_expr(c: _Checker, e: ast.Expr, record: ir.RecordType | Scope,
               known: frozenset[tuple[str, ...]] = frozenset()) -> ir.Expr | None:  # fmt: skip
    if isinstance(e, ast.FieldPath):
        root, names, prefix = 0, e.names, cast(tuple[str, ...], ())
        base: ir.Type = record[0][1] if isinstance(record, tuple) else record
        if isinstance(record, tuple):
            # A path starts with a part's name, or else with a field of the element.
            for i, (name, part) in enumerate(record):
                if name == e.names[0].text:
                    root, names, base, prefix = i, e.names[1:], part, (name,)
                    break
        parts = () if prefix or not isinstance(record, tuple) else tuple(
            name for name, _ in record if name is not None)  # fmt: skip
        t = c.resolve_path(names, base, known=known, prefix=prefix, parts=parts)
        if t is None:
            return None
        return c.share(ir.FieldRef(tuple(n.text for n in names), t, root))
    if isinstance(e, ast.StrLit):
        return c.share(ir.Const(e.value, ir.STR))
    if isinstance(e, ast.BoolLit):
        return c.share(ir.Const(e.value, ir.BOOL))
    if isinstance(e, ast.IntLit):
        return c.share(ir.Const(e.value, ir.INT))
    if isinstance(e, ast.FloatLit):
        return ir.Const(e.value, ir.FLOAT)
    if isinstance(e, ast.NullLit):
        # Typed once we know what it is compared with (see `binary`).
        return ir.Const(None, _NULL)
    if isinstance(e, ast.UnaryExpr):
        operand = c.check_expr(e.operand, record, known)
        if operand is None:
            return None
        if _is_null(operand):
            c.error(e.span, "E310", f"'{e.op}' cannot be applied to null")
            return None
        if e.op == "not":
            if operand.type != ir.BOOL:
                c.error(
                    e.span,
                    "E310",
                    f"'not' needs a bool, found {operand.type}",
                    _maybe_null_hint(operand.type),
                )
                return None
            return ir.Unary("not", operand, ir.BOOL)
        if operand.type not in NUMERIC:
            c.error(
                e.span,
                "E310",
                f"'-' needs a number, found {operand.type}",
                _maybe_null_hint(operand.type),
            )
            return None
        return ir.Unary("-", operand, operand.type)
    if isinstance(e, ast.BinaryExpr):
        return c.check_binary(e, record, known)
    return None  # pragma: no cover - lists never reach expressions


def check_chain(c: _Checker, e: ast.BinaryExpr, record: ir.RecordType | Scope,
                known: frozenset[tuple[str, ...]]) -> ir.Expr | None:  # fmt: skip
    """`a or b or c`, walked in a loop: the parser lets such a chain be any length."""
    links: list[ast.BinaryExpr] = []  # the chain's nodes, outermost first
    node: ast.Expr = e
    while isinstance(node, ast.BinaryExpr) and node.op == e.op:
        links.append(node)
        node = node.left
    # `x != null and x > 1`: the right side of `and` runs only when the left holds (and of
    # `or` only when it fails), so what the left proves about null narrows the right.
    holds = e.op == "and"
    result = c.check_expr(node, record, known)
    known = known | _not_null(node, holds)
    for link in reversed(links):
        right = c.check_expr(link.right, record, known)
        known = known | _not_null(link.right, holds)
        if result is None or right is None:
            result = None
            continue
        result = c.check_bools(link, result, right)
    return result


def check_bools(c: _Checker, e: ast.BinaryExpr, left: ir.Expr, right: ir.Expr) -> ir.Expr | None:
    op = cast(ir.BinaryOp, e.op)
    for side in (left, right):
        if side.type != ir.BOOL:
            c.error(
                e.span,
                "E310",
                f"'{op}' needs bool operands, found {_show_expr(side)}",
                _maybe_null_hint(side.type),
            )
            return None
    return ir.Binary(op, left, right, ir.BOOL)


def check_binary(c: _Checker, e: ast.BinaryExpr, record: ir.RecordType | Scope,
                 known: frozenset[tuple[str, ...]]) -> ir.Expr | None:  # fmt: skip
    if e.op in ("and", "or"):
        return c.check_chain(e, record, known)
    left = c.check_expr(e.left, record, known)
    right = c.check_expr(e.right, record, known)
    if left is None or right is None:
        return None
    op = cast(ir.BinaryOp, e.op)
    lt, rt = left.type, right.type
    if op in ("==", "!="):
        if _is_null(left) and _is_null(right):
            c.error(
                e.span, "E310", "comparing null with null is always the same"
            )
            return None
        if _is_null(left) or _is_null(right):
            other = right if _is_null(left) else left
            if not isinstance(other.type, ir.OptionalType):
                c.error(
                    e.span,
                    "E310",
                    f"{_show_expr(other)} is {other.type}, which is never null",
                    [f"only optional values ({other.type}?) can be null"],
                )
                return None
            null = ir.Const(None, other.type)
            left, right = (null, right) if _is_null(left) else (left, null)
            return ir.Binary(op, left, right, ir.BOOL)
        lb, rb = _strip(lt), _strip(rt)
        if lb != rb and not (lb in NUMERIC and rb in NUMERIC):
            c.error(
                e.span,
                "E310",
                f"cannot compare {lt} with {rt}",
                [f"'{op}' needs values of the same type"],
            )
            return None
        return ir.Binary(op, left, right, ir.BOOL)
    if _is_null(left) or _is_null(right):
        c.error(e.span, "E310", f"'{op}' cannot be applied to null")
        return None
    if op in ("<", "<=", ">", ">="):
        if (lt in NUMERIC and rt in NUMERIC) or lt == rt == ir.STR or lt == rt == ir.TIME:
            return ir.Binary(op, left, right, ir.BOOL)
        c.error(
            e.span,
            "E310",
            f"cannot compare {lt} with {rt} using '{op}'",
            _maybe_null_hint(lt if isinstance(lt, ir.OptionalType) else rt)
            or [f"'{op}' compares two numbers, two strings or two times"],
        )
        return None
    # arithmetic
    if op == "+" and lt == rt == ir.STR:
        return ir.Binary(op, left, right, ir.STR)
    if lt in NUMERIC and rt in NUMERIC:
        result = ir.FLOAT if (op == "/" or ir.FLOAT in (lt, rt)) else ir.INT
        return ir.Binary(op, left, right, result)
    c.error(
        e.span,
        "E310",
        f"'{op}' cannot be applied to {lt} and {rt}",
        _maybe_null_hint(lt if isinstance(lt, ir.OptionalType) else rt)
        or [f"'{op}' needs two numbers" + (" or two strings" if op == "+" else "")],
    )
    return None
