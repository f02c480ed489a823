"""Expressions: a typed `where`/`select` expression lowered to Python with only the
parentheses it needs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import ir
from .naming import py_literal

if TYPE_CHECKING:
    from .emit_shape import _Shaper


_PRECEDENCE: dict[str, int] = {
    "or": 1,
    "and": 2,
    "not": 3,
    **dict.fromkeys(("==", "!=", "<", "<=", ">", ">="), 4),
    "+": 5,
    "-": 5,
    "*": 6,
    "/": 6,
    "%": 6,
}
_NEGATION = 7
_ATOM = 8


class _Expression:
    """Lowers a typed `where` expression to Python with only the parentheses it needs."""

    def __init__(self, shaper: _Shaper, parts: tuple[tuple[str, ir.Type], ...]) -> None:
        self.shaper = shaper
        self.parts = parts  # (parameter, type) of the element's parts, see `_Shaper.parts`

    def render(self, expr: ir.Expr) -> str:
        return self._render(expr)[0]

    def _render(self, expr: ir.Expr) -> tuple[str, int]:
        match expr:
            case ir.FieldRef(path=path, root=root):
                param, element = self.parts[root]
                return self.shaper.field_path(param, path, element), _ATOM
            case ir.Const(value=value):
                text = py_literal(value)
                return text, (_NEGATION if text.startswith("-") else _ATOM)
            case ir.Unary(op="not", operand=operand):
                # `not (x is None)` rather than `not x is None`, which reads as a different test.
                return f"not {self._operand(operand, _PRECEDENCE['+'])}", _PRECEDENCE["not"]
            case ir.Unary(op="-", operand=operand):
                return f"-{self._operand(operand, _ATOM)}", _NEGATION
            case ir.Binary(op=("and" | "or") as op):
                # A chain `a or b or c` of any length, walked in a loop: one flat `or` in Python.
                level = _PRECEDENCE[op]
                rights: list[ir.Expr] = []
                node: ir.Expr = expr
                while isinstance(node, ir.Binary) and node.op == op:
                    rights.append(node.right)
                    node = node.left
                texts = [self._operand(node, level)]
                texts.extend(self._operand(right, level + 1) for right in reversed(rights))
                return f" {op} ".join(texts), level
            case ir.Binary(op=op, left=left, right=right):
                level = _PRECEDENCE[op]
                if op in ("==", "!=") and (_is_null(left) or _is_null(right)):
                    subject = right if _is_null(left) else left
                    test = "is" if op == "==" else "is not"
                    return f"{self._operand(subject, level + 1)} {test} None", level
                # Comparisons never chain (Python would read `a < b < c` as a chain), and every
                # operator is left-associative, so the right operand binds tighter.
                left_needs = level + 1 if level == _PRECEDENCE["=="] else level
                left_text = self._operand(left, left_needs)
                return f"{left_text} {op} {self._operand(right, level + 1)}", level
        raise AssertionError(expr)

    def _operand(self, expr: ir.Expr, needs: int) -> str:
        text, level = self._render(expr)
        return f"({text})" if level < needs else text


def _is_null(expr: ir.Expr) -> bool:
    return isinstance(expr, ir.Const) and expr.value is None
