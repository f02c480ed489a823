"""Tokens to `ast` nodes: the callbacks the parser runs as each grammar rule reduces.

`_ToAst` is the one place the AST is built: `parser.parse`'s lean loop over the LALR tables
(`_FastParser`) and Lark's own parser, which parses again after any error, both call its
methods. It also enforces the nesting limits and raises `_AstError` (E107, E108) for what the
grammar accepts but the language does not: bad escapes, numbers and durations too large.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Iterable
from typing import Any

from lark import Token, Transformer

from . import ast
from .diagnostics import Span

# Deeper `where` expressions, types and longer field paths are refused: nobody writes them, and
# the checker, the emitter and Python's own compiler of the generated module recurse on them,
# so the bound is what keeps them far from Python's recursion limits. Depth counts real
# nesting: parentheses, precedence levels, `not`, field path length; a flat chain of `or` (or
# of `and`) is one level however long.
MAX_EXPR_DEPTH = 100


class _AstError(Exception):
    """A problem found while building the AST; `parse` adds the file name."""

    def __init__(
        self, span: Span, code: str, message: str, hints: Iterable[str] = ()
    ) -> None:
        super().__init__(message)
        self.span, self.code, self.message, self.hints = (
            span,
            code,
            message,
            tuple(hints),
        )


def _tspan(tok: Token) -> Span:
    # The lexer always sets every position of a token it produced.
    return Span(tok.line, tok.column, tok.end_line, tok.end_column, tok.start_pos,  # type: ignore[arg-type]
                tok.end_pos)  # type: ignore[arg-type]  # fmt: skip


def _name(tok: Token) -> ast.Name:
    text = str(tok)
    if text.startswith("`"):
        text = text[1:-1]
    # One string per distinct name: a big program names the same topics and fields over and
    # over, and the tree keeps every name for as long as it lives.
    return ast.Name(sys.intern(text), _tspan(tok))


def _span_of(child: Any) -> Span:
    return _tspan(child) if isinstance(child, Token) else child.span


def _cover(children: list[Any]) -> Span:
    """The span from the first to the last child (tokens or nodes), skipping placeholders."""
    first = children[0]  # every rule starts with a token or a node, never a placeholder
    last = children[-1]
    if last is None:
        last = next(c for c in reversed(children) if c is not None)
    # Written out per case: this runs for every node of the tree.
    if isinstance(first, Token):
        if isinstance(last, Token):
            return Span(first.line, first.column, last.end_line, last.end_column,  # type: ignore[arg-type]
                        first.start_pos, last.end_pos)  # type: ignore[arg-type]  # fmt: skip
        return _tspan(first).to(last.span)
    return first.span.to(_tspan(last) if isinstance(last, Token) else last.span)  # type: ignore[no-any-return]


def _names(children: list[Any]) -> tuple[ast.Name, ...]:
    return tuple(
        _name(c) for c in children if isinstance(c, Token) and c.type == "NAME"
    )


def _nodes(children: list[Any], kind: Any) -> tuple[Any, ...]:
    return tuple(c for c in children if isinstance(c, kind))


_ESCAPES = {"\\": "\\", '"': '"', "n": "\n", "t": "\t", "r": "\r", "0": "\0"}
_ESCAPE = re.compile(r"\\(.)")  # pairs from the left: an escaped backslash then `d`, not `\d`
_TYPES = (ast.NamedType, ast.TupleTypeExpr)
_OPS = (ast.ProcessOp, ast.GroupByOp, ast.TakeOp, ast.EnumerateOp, ast.ThroughOp, ast.EchoOp,
        ast.ItemsOp, ast.EventsOp, ast.WhereOp, ast.FilterOp, ast.ToOp, ast.SinkOp,
        ast.AggregateOp, ast.DistinctOp, ast.WindowOp, ast.SelectOp, ast.JoinOp,
        ast.JoinStreamOp)  # fmt: skip
_WINDOW_OPTIONS = (ast.WindowKind, ast.WindowGrace, ast.WindowEmit, ast.WindowLate)
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def _duration(tok: Token) -> ast.Duration:
    m = re.fullmatch(r"([0-9.]+)(ms|s|m|h|d)", str(tok))
    assert m is not None  # the DURATION terminal guarantees the shape
    if len(m.group(1)) > 30:
        raise _AstError(_tspan(tok), "E108", "duration is too large")
    seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    return ast.Duration(seconds, sys.intern(str(tok)), _tspan(tok))


def _too_deep(span: Span, what: str) -> _AstError:
    return _AstError(span, "E107", f"{what} is nested more than {MAX_EXPR_DEPTH} levels deep",
                     ["split the condition into several `where` operations"]
                     if what == "expression" else [])  # fmt: skip


class _Return:
    """The `-> T` of a hook signature, told apart from its parameter types."""

    def __init__(self, type: ast.TypeExpr, span: Span) -> None:
        self.type, self.span = type, span


class _ToAst(Transformer[Token, Any]):
    """Callbacks that build frozen AST nodes as the LALR parser reduces each rule.

    Running inside the parser (no tree, no recursion) means 10,000 nested parentheses cannot
    overflow the stack; expression and type depth is bounded here instead.
    """

    # ---- literals
    def _string(self, tok: Token) -> ast.StrLit:
        raw = str(tok)[1:-1]
        if "\\" not in raw:
            return ast.StrLit(raw, _tspan(tok))

        def unescape(m: re.Match[str]) -> str:
            if m.group(1) in _ESCAPES:
                return _ESCAPES[m.group(1)]
            span, i = _tspan(tok), m.start()
            col = span.col + 1 + i
            where = Span(span.line, col, span.line, col + 2, span.start + 1 + i,
                         span.start + 3 + i)  # fmt: skip
            raise _AstError(where, "E108", f"unknown escape '\\{m.group(1)}' in a string",
                            ['write "\\\\" for a backslash'])  # fmt: skip

        return ast.StrLit(_ESCAPE.sub(unescape, raw), _tspan(tok))

    def _int(self, toks: list[Token]) -> ast.IntLit:
        span = _tspan(toks[0]).to(_tspan(toks[-1]))
        digits = str(toks[-1])
        if len(digits) > 30:
            raise _AstError(span, "E108", "number is too large")
        value = int(digits)
        return ast.IntLit(-value if len(toks) == 2 else value, span)

    def str_lit(self, children: list[Token]) -> ast.StrLit:
        return self._string(children[0])

    def int_lit(self, children: list[Token]) -> ast.IntLit:
        return self._int(children)

    def float_lit(self, children: list[Token]) -> ast.FloatLit:
        span = _cover(children)
        value = float(str(children[-1]))
        if value == float("inf"):
            raise _AstError(span, "E108", "number is too large")
        return ast.FloatLit(-value if len(children) == 2 else value, span)

    def true_lit(self, children: list[Token]) -> ast.BoolLit:
        return ast.BoolLit(True, _cover(children))

    def false_lit(self, children: list[Token]) -> ast.BoolLit:
        return ast.BoolLit(False, _cover(children))

    def null_lit(self, children: list[Token]) -> ast.NullLit:
        return ast.NullLit(_cover(children))

    def list_lit(self, children: list[Any]) -> ast.ListLit:
        items = tuple(c for c in children if c is not None and not isinstance(c, Token))
        return ast.ListLit(items, _cover(children))

    # ---- types
    def _type_depth(self, span: Span, items: tuple[ast.TypeExpr, ...]) -> int:
        depth = 1 + max((t.depth for t in items), default=0)
        if depth > MAX_EXPR_DEPTH:
            raise _too_deep(span, "type")
        return depth

    def named_type(self, children: list[Any]) -> ast.NamedType:
        last = children[-1]
        optional = isinstance(last, Token) and last.type == "OPTIONAL"
        args = _nodes(children, _TYPES)
        span = _cover(children)
        return ast.NamedType(_name(children[0]), args, optional, span,
                             self._type_depth(span, args))  # fmt: skip

    def tuple_type(self, children: list[Any]) -> ast.TupleTypeExpr:
        last = children[-1]
        optional = isinstance(last, Token) and last.type == "OPTIONAL"
        items = _nodes(children, _TYPES)
        span = _cover(children)
        return ast.TupleTypeExpr(items, optional, span, self._type_depth(span, items))

    # ---- declarations
    def app_decl(self, children: list[Token]) -> ast.AppDecl:
        return ast.AppDecl(_name(children[1]), _cover(children))

    def field(self, children: list[Any]) -> ast.FieldDecl:
        default = children[4] if len(children) > 4 else None
        return ast.FieldDecl(_name(children[0]), children[2], default, _cover(children))

    def record_decl(self, children: list[Any]) -> ast.RecordDecl:
        return ast.RecordDecl(_name(children[1]), _nodes(children, ast.FieldDecl),
                              _cover(children))  # fmt: skip

    def topic_key(self, children: list[Any]) -> ast.TopicKey:
        return ast.TopicKey(children[1], _cover(children))

    def topic_partitions(self, children: list[Token]) -> ast.TopicPartitions:
        return ast.TopicPartitions(self._int(children[1:]), _cover(children))

    def topic_kafka_name(self, children: list[Token]) -> ast.TopicKafkaName:
        return ast.TopicKafkaName(self._string(children[1]), _cover(children))

    def topic_timestamp(self, children: list[Token]) -> ast.TopicTimestamp:
        return ast.TopicTimestamp(_name(children[1]), _cover(children))

    def topic_compacted(self, children: list[Token]) -> ast.TopicCompacted:
        return ast.TopicCompacted(_cover(children))

    def topic_decl(self, children: list[Any]) -> ast.TopicDecl:
        types = _nodes(children, _TYPES)
        options = _nodes(children, (ast.TopicKey, ast.TopicPartitions, ast.TopicKafkaName,
                                    ast.TopicTimestamp, ast.TopicCompacted))  # fmt: skip
        return ast.TopicDecl(_name(children[1]), types[0] if types else None, options,
                             _cover(children))  # fmt: skip

    def table_key(self, children: list[Any]) -> ast.TopicKey:
        return ast.TopicKey(children[1], _cover(children))

    def table_source(self, children: list[Token]) -> ast.TableSource:
        return ast.TableSource(_name(children[1]), _cover(children))

    def table_global(self, children: list[Token]) -> ast.TableGlobal:
        return ast.TableGlobal(_cover(children))

    def table_decl(self, children: list[Any]) -> ast.TableDecl:
        options = _nodes(children, (ast.TopicKey, ast.TopicPartitions, ast.TableSource,
                                    ast.TableGlobal))  # fmt: skip
        return ast.TableDecl(_name(children[1]), children[3], options, _cover(children))

    def hook_return(self, children: list[Any]) -> _Return:
        return _Return(children[1], _cover(children))

    def hook_sig(self, children: list[Any]) -> ast.HookSig:
        returns = children[-1].type if isinstance(children[-1], _Return) else None
        return ast.HookSig(_name(children[0]), _nodes(children, _TYPES), returns,
                           _cover(children))  # fmt: skip

    def hooks_decl(self, children: list[Any]) -> ast.HooksDecl:
        return ast.HooksDecl(self._string(children[1]), _nodes(children, ast.HookSig),
                             _cover(children))  # fmt: skip

    def requires_decl(self, children: list[Token]) -> ast.RequiresDecl:
        strings = tuple(self._string(c) for c in children if c.type == "STRING")
        return ast.RequiresDecl(strings, _cover(children))

    def source(self, children: list[Token]) -> ast.Source:
        if len(children) > 2 and children[-2] == "as":
            return ast.Source(_names(children[:-2]), _cover(children), _name(children[-1]))
        return ast.Source(_names(children), _cover(children))

    def agent_decl(self, children: list[Any]) -> ast.AgentDecl:
        return ast.AgentDecl(_name(children[1]), children[3], _nodes(children, _OPS),
                             _cover(children))  # fmt: skip

    # ---- operations
    def _refs(self, children: list[Token]) -> tuple[ast.TopicRef, ...]:
        return tuple(self._string(t) if t.type == "STRING" else _name(t)
                     for t in children[1:] if t.type in ("STRING", "NAME"))  # fmt: skip

    def process_op(self, children: list[Token]) -> ast.ProcessOp:
        return ast.ProcessOp(_names(children), _cover(children))

    def group_by_op(self, children: list[Token]) -> ast.GroupByOp:
        return ast.GroupByOp(_field_path(children), _cover(children))

    def take_op(self, children: list[Token]) -> ast.TakeOp:
        within = None
        number = [c for c in children[1:3] if c.type in ("MINUS", "INT")]
        if children[-1].type == "DURATION":
            within = _duration(children[-1])
        return ast.TakeOp(self._int(number), within, _cover(children))

    def distinct_op(self, children: list[Token]) -> ast.DistinctOp:
        return ast.DistinctOp(_field_path(children[1:-2]), _duration(children[-1]),
                              _cover(children))  # fmt: skip

    def window_tumbling(self, children: list[Token]) -> ast.WindowKind:
        return ast.WindowKind("tumbling", _duration(children[2]), None, _cover(children))

    def window_hopping(self, children: list[Token]) -> ast.WindowKind:
        return ast.WindowKind("hopping", _duration(children[2]), _duration(children[4]),
                              _cover(children))  # fmt: skip

    def window_session(self, children: list[Token]) -> ast.WindowKind:
        return ast.WindowKind("session", _duration(children[2]), None, _cover(children))

    def window_grace(self, children: list[Token]) -> ast.WindowGrace:
        return ast.WindowGrace(_duration(children[1]), _cover(children))

    def window_emit(self, children: list[Token]) -> ast.WindowEmit:
        return ast.WindowEmit(str(children[1]), _cover(children))

    def window_late(self, children: list[Token]) -> ast.WindowLate:
        return ast.WindowLate(self._refs(children[1:])[0], _cover(children))

    def window_op(self, children: list[Any]) -> ast.WindowOp:
        return ast.WindowOp(_nodes(children, _WINDOW_OPTIONS), _cover(children))

    def enumerate_op(self, children: list[Token]) -> ast.EnumerateOp:
        number = [c for c in children[1:] if c is not None]
        return ast.EnumerateOp(self._int(number) if number else None, _cover(children))

    def through_op(self, children: list[Token]) -> ast.ThroughOp:
        return ast.ThroughOp(self._refs(children)[0], _cover(children))

    def echo_op(self, children: list[Token]) -> ast.EchoOp:
        return ast.EchoOp(self._refs(children), _cover(children))

    def items_op(self, children: list[Token]) -> ast.ItemsOp:
        return ast.ItemsOp(_cover(children))

    def events_op(self, children: list[Token]) -> ast.EventsOp:
        return ast.EventsOp(_cover(children))

    def where_op(self, children: list[Any]) -> ast.WhereOp:
        return ast.WhereOp(children[1], _cover(children))

    def filter_op(self, children: list[Token]) -> ast.FilterOp:
        return ast.FilterOp(_name(children[1]), _cover(children))

    def to_op(self, children: list[Token]) -> ast.ToOp:
        return ast.ToOp(self._refs(children)[0], _cover(children))

    def sink_op(self, children: list[Token]) -> ast.SinkOp:
        return ast.SinkOp(_name(children[1]), _cover(children))

    def agg_key(self, children: list[Token]) -> ast.AggKey:
        return ast.AggKey(_cover(children))

    def agg_window(self, children: list[Token]) -> ast.AggWindow:
        return ast.AggWindow(_name(children[2]), _cover(children))

    def agg_call(self, children: list[Any]) -> ast.AggCall:
        args = tuple(c for c in children[2:] if c is not None and not isinstance(c, Token))
        return ast.AggCall(_name(children[0]), args, _cover(children))

    def agg_field(self, children: list[Any]) -> ast.AggField:
        return ast.AggField(_name(children[0]), children[2], _cover(children))

    def aggregate_op(self, children: list[Any]) -> ast.AggregateOp:
        return ast.AggregateOp(_name(children[1]), _nodes(children, ast.AggField),
                               _cover(children), _nodes(children, _WINDOW_OPTIONS))  # fmt: skip

    def join_on_key(self, children: list[Token]) -> list[Token]:
        return children

    def join_on_field(self, children: list[Token]) -> list[Token]:
        return children

    def join_op(self, children: list[Any]) -> ast.JoinOp:
        left = children[0].type == "LEFT"
        words = children[1:] if left else children  # join TABLE as NAME on PATH
        on: list[Token] = words[-1]
        path = _field_path(on) if on[0].type == "NAME" else ()
        span = _cover([*children[:-1], on[-1]])
        return ast.JoinOp(_name(words[1]), _name(words[3]), path, left, span)

    def join_stream_op(self, children: list[Any]) -> ast.JoinStreamOp:
        first = children[0]
        how = str(first).lower() if first.type in ("LEFT", "OUTER") else "inner"
        words = children[1:] if how != "inner" else children  # join stream TOPIC as NAME ...
        grace = next((c for c in children if isinstance(c, ast.WindowGrace)), None)
        late = next((c for c in children if isinstance(c, ast.WindowLate)), None)
        return ast.JoinStreamOp(self._refs(words[1:3])[0], _name(words[4]), how,
                                _duration(words[6]), grace, late, _cover(children))  # fmt: skip

    def select_field(self, children: list[Any]) -> ast.SelectField:
        return ast.SelectField(_name(children[0]), children[2], _cover(children))

    def select_op(self, children: list[Any]) -> ast.SelectOp:
        return ast.SelectOp(_name(children[1]), _nodes(children, ast.SelectField),
                            _cover(children))  # fmt: skip

    # ---- expressions
    def field_ref(self, children: list[Token]) -> ast.FieldPath:
        names = _field_path(children)
        # A one-field path spans its name: share the span rather than hold an equal copy.
        span = names[0].span if len(names) == 1 else _cover(children)
        return ast.FieldPath(names, span)

    def paren(self, children: list[Any]) -> ast.Expr:
        # The parentheses belong to the expression's span, so `not (x == null)` quotes whole.
        inner = children[1]
        return dataclasses.replace(inner, span=_cover(children))  # type: ignore[no-any-return]

    def binary(self, children: list[Any]) -> ast.BinaryExpr:
        left, op, right = children
        if op.type in ("OR", "AND") and isinstance(left, ast.BinaryExpr) and left.op == op:
            # `a or b or c` is one flat chain (a single BoolOp in the generated Python, walked
            # in a loop by the checker and the emitter): only its operands nest.
            depth = max(left.depth, 1 + _depth(right))
        else:
            depth = 1 + max(_depth(left), _depth(right))
        span = _span_of(left).to(_span_of(right))
        if depth > MAX_EXPR_DEPTH:
            raise _too_deep(span, "expression")
        return ast.BinaryExpr(sys.intern(str(op)), left, right, span, depth)

    def unary(self, children: list[Any]) -> ast.UnaryExpr:
        op, operand = children
        depth = 1 + _depth(operand)
        span = _tspan(op).to(_span_of(operand))
        if depth > MAX_EXPR_DEPTH:
            raise _too_deep(span, "expression")
        return ast.UnaryExpr(sys.intern(str(op)), operand, span, depth)

    def start(self, children: list[ast.Decl]) -> list[ast.Decl]:
        return children


def _depth(node: Any) -> int:
    # `a.b.c` is three attribute accesses nested in the generated Python: a path counts its
    # length, so a 3,000-field path cannot make a module that Python refuses to compile.
    if isinstance(node, ast.FieldPath):
        return len(node.names)
    return int(getattr(node, "depth", 1))


def _field_path(children: list[Token]) -> tuple[ast.Name, ...]:
    names = _names(children)
    if len(names) > MAX_EXPR_DEPTH:
        span = names[0].span.to(names[-1].span)
        raise _AstError(span, "E107", f"field path is more than {MAX_EXPR_DEPTH} fields long")
    return names
