"""Text to `ast.Module`: the Lark LALR parser, and syntax errors in the language's own words.

`parse` is the only entry point. A syntax error becomes a `DiagnosticError` whose message names
what the language expected ("expected a record name", "unexpected end of file", "unknown
operation 'grop_by'" with a did-you-mean) rather than Lark's terminal names, in the manner of
Preql's parser. Only the first syntax error is reported: after it, the tree is not trustworthy
enough to check.
"""

from __future__ import annotations

import functools
import importlib.resources
import re
from collections.abc import Iterable
from typing import Any, NoReturn

from lark import Lark, Token, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken, VisitError
from lark.lexer import PatternStr
from lark.tree import Meta
from lark.visitors import Transformer_NonRecursive

from . import ast
from .diagnostics import Diagnostic, DiagnosticError, Span, did_you_mean

# Deeper `where` expressions are refused: nobody writes them, and the checker walks
# expressions recursively, so the bound is what keeps it far from Python's recursion limit.
MAX_EXPR_DEPTH = 100

DECL_KEYWORDS = ("app", "record", "topic", "hooks", "agent")
OP_KEYWORDS = (
    "process", "group_by", "take", "enumerate", "through", "echo", "items", "events", "where",
    "filter", "to", "sink",
)  # fmt: skip


@functools.cache
def _lark() -> Lark:
    grammar = importlib.resources.files("streamc.grammar") / "streamc.lark"
    return Lark(
        grammar.read_text(encoding="utf-8"),
        parser="lalr",
        lexer="contextual",
        propagate_positions=True,
        maybe_placeholders=True,
    )


def parse(text: str, filename: str) -> ast.Module:
    """Parse an .sdl source. Raises `DiagnosticError` (one E1xx diagnostic) if it is invalid."""
    try:
        tree = _lark().parse(text)
    except UnexpectedInput as e:
        raise DiagnosticError([_syntax_diagnostic(e, text, filename)]) from None
    except RecursionError:  # pragma: no cover - the grammar is LALR; only a safety net
        raise DiagnosticError([_too_deep(filename, None)]) from None
    try:
        decls = _ToAst(filename).transform(tree)
    except VisitError as e:
        if isinstance(e.orig_exc, DiagnosticError):
            raise e.orig_exc from None
        raise
    return ast.Module(filename=filename, text=text, decls=tuple(decls))


# ---------------------------------------------------------------------------------------------
# Tree to AST


def _span(meta: Meta) -> Span:
    return Span(meta.line, meta.column, meta.end_line, meta.end_column, meta.start_pos,
                meta.end_pos)  # fmt: skip


def _tspan(tok: Token) -> Span:
    assert tok.line is not None and tok.column is not None
    assert tok.end_line is not None and tok.end_column is not None
    assert tok.start_pos is not None and tok.end_pos is not None
    return Span(tok.line, tok.column, tok.end_line, tok.end_column, tok.start_pos, tok.end_pos)


def _name(tok: Token) -> ast.Name:
    text = str(tok)
    if text.startswith("`"):
        text = text[1:-1]
    return ast.Name(text, _tspan(tok))


_ESCAPES = {"\\": "\\", '"': '"', "n": "\n", "t": "\t", "r": "\r", "0": "\0"}


def _too_deep(filename: str, span: Span | None) -> Diagnostic:
    return Diagnostic.error(
        filename, span, "E107",
        f"expression is nested more than {MAX_EXPR_DEPTH} levels deep",
        ["split the condition into several `where` operations"],
    )  # fmt: skip


class _ToAst(Transformer_NonRecursive):  # type: ignore[type-arg]
    """Builds frozen AST nodes bottom-up.

    Lark's non-recursive transformer, so 10,000 nested parentheses cannot overflow the stack.
    """

    def __init__(self, filename: str) -> None:
        super().__init__(visit_tokens=False)
        self.filename = filename

    def _fail(self, span: Span, code: str, message: str, hints: Iterable[str] = ()) -> NoReturn:
        raise DiagnosticError([Diagnostic.error(self.filename, span, code, message, hints)])

    # ---- literals
    def _string(self, tok: Token) -> ast.StrLit:
        raw = str(tok)[1:-1]
        out: list[str] = []
        i = 0
        while i < len(raw):
            c = raw[i]
            if c == "\\":
                esc = raw[i + 1]
                if esc not in _ESCAPES:
                    span = _tspan(tok)
                    col = span.col + 1 + i
                    where = Span(span.line, col, span.line, col + 2, span.start + 1 + i,
                                 span.start + 3 + i)  # fmt: skip
                    self._fail(where, "E108", f"unknown escape '\\{esc}' in a string",
                               ['write "\\\\" for a backslash'])  # fmt: skip
                out.append(_ESCAPES[esc])
                i += 2
            else:
                out.append(c)
                i += 1
        return ast.StrLit("".join(out), _tspan(tok))

    def _int(self, toks: list[Token]) -> ast.IntLit:
        span = _tspan(toks[0]).to(_tspan(toks[-1]))
        digits = str(toks[-1])
        if len(digits) > 30:
            self._fail(span, "E108", "number is too large")
        value = int(digits)
        return ast.IntLit(-value if len(toks) == 2 else value, span)

    def str_lit(self, children: list[Token]) -> ast.StrLit:
        return self._string(children[0])

    def int_lit(self, children: list[Token]) -> ast.IntLit:
        return self._int(children)

    def float_lit(self, children: list[Token]) -> ast.FloatLit:
        span = _tspan(children[0]).to(_tspan(children[-1]))
        value = float(str(children[-1]))
        if value == float("inf"):
            self._fail(span, "E108", "number is too large")
        return ast.FloatLit(-value if len(children) == 2 else value, span)

    @v_args(meta=True)
    def true_lit(self, meta: Meta, children: list[Any]) -> ast.BoolLit:
        return ast.BoolLit(True, _span(meta))

    @v_args(meta=True)
    def false_lit(self, meta: Meta, children: list[Any]) -> ast.BoolLit:
        return ast.BoolLit(False, _span(meta))

    @v_args(meta=True)
    def null_lit(self, meta: Meta, children: list[Any]) -> ast.NullLit:
        return ast.NullLit(_span(meta))

    @v_args(meta=True)
    def list_lit(self, meta: Meta, children: list[ast.Literal | None]) -> ast.ListLit:
        return ast.ListLit(tuple(c for c in children if c is not None), _span(meta))

    # ---- types
    @v_args(meta=True)
    def named_type(self, meta: Meta, children: list[Any]) -> ast.NamedType:
        optional = bool(children) and isinstance(children[-1], Token) and children[-1] == "?"
        args = tuple(c for c in children[1:] if not isinstance(c, Token))
        return ast.NamedType(_name(children[0]), args, optional, _span(meta))

    @v_args(meta=True)
    def tuple_type(self, meta: Meta, children: list[Any]) -> ast.TupleTypeExpr:
        optional = isinstance(children[-1], Token) and children[-1] == "?"
        items = tuple(c for c in children if not isinstance(c, Token))
        return ast.TupleTypeExpr(items, optional, _span(meta))

    # ---- declarations
    @v_args(meta=True)
    def app_decl(self, meta: Meta, children: list[Token]) -> ast.AppDecl:
        return ast.AppDecl(_name(children[0]), _span(meta))

    @v_args(meta=True)
    def field(self, meta: Meta, children: list[Any]) -> ast.FieldDecl:
        default = children[2] if len(children) > 2 else None
        return ast.FieldDecl(_name(children[0]), children[1], default, _span(meta))

    @v_args(meta=True)
    def record_decl(self, meta: Meta, children: list[Any]) -> ast.RecordDecl:
        return ast.RecordDecl(_name(children[0]), tuple(children[1:]), _span(meta))

    @v_args(meta=True)
    def topic_key(self, meta: Meta, children: list[Any]) -> ast.TopicKey:
        return ast.TopicKey(children[0], _span(meta))

    @v_args(meta=True)
    def topic_partitions(self, meta: Meta, children: list[Token]) -> ast.TopicPartitions:
        return ast.TopicPartitions(self._int([children[0]]), _span(meta))

    @v_args(meta=True)
    def topic_kafka_name(self, meta: Meta, children: list[Token]) -> ast.TopicKafkaName:
        return ast.TopicKafkaName(self._string(children[0]), _span(meta))

    @v_args(meta=True)
    def topic_decl(self, meta: Meta, children: list[Any]) -> ast.TopicDecl:
        rest = children[1:]
        value_type = None
        if rest and isinstance(rest[0], ast.NamedType | ast.TupleTypeExpr):
            value_type, rest = rest[0], rest[1:]
        return ast.TopicDecl(_name(children[0]), value_type, tuple(rest), _span(meta))

    @v_args(meta=True)
    def hook_return(self, meta: Meta, children: list[Any]) -> _Return:
        return _Return(children[0])

    @v_args(meta=True)
    def hook_sig(self, meta: Meta, children: list[Any]) -> ast.HookSig:
        # Lark's placeholder gives [NAME, None] for `f()`; a return type comes as a _Return.
        returns = None
        params: list[ast.TypeExpr] = []
        for child in children[1:]:
            if isinstance(child, _Return):
                returns = child.type
            elif child is not None:
                params.append(child)
        return ast.HookSig(_name(children[0]), tuple(params), returns, _span(meta))

    @v_args(meta=True)
    def hooks_decl(self, meta: Meta, children: list[Any]) -> ast.HooksDecl:
        return ast.HooksDecl(self._string(children[0]), tuple(children[1:]), _span(meta))

    @v_args(meta=True)
    def source(self, meta: Meta, children: list[Token]) -> ast.Source:
        return ast.Source(tuple(_name(t) for t in children), _span(meta))

    @v_args(meta=True)
    def agent_decl(self, meta: Meta, children: list[Any]) -> ast.AgentDecl:
        return ast.AgentDecl(_name(children[0]), children[1], tuple(children[2:]), _span(meta))

    # ---- operations
    def _ref(self, tok: Token) -> ast.TopicRef:
        return self._string(tok) if tok.type == "STRING" else _name(tok)

    @v_args(meta=True)
    def process_op(self, meta: Meta, children: list[Token]) -> ast.ProcessOp:
        return ast.ProcessOp(tuple(_name(t) for t in children), _span(meta))

    @v_args(meta=True)
    def group_by_op(self, meta: Meta, children: list[Token]) -> ast.GroupByOp:
        return ast.GroupByOp(tuple(_name(t) for t in children), _span(meta))

    @v_args(meta=True)
    def take_op(self, meta: Meta, children: list[Token]) -> ast.TakeOp:
        within = None
        if len(children) > 1:
            tok = children[1]
            m = re.fullmatch(r"([0-9.]+)(ms|s|m|h)", str(tok))
            assert m is not None  # the DURATION terminal guarantees the shape
            scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[m.group(2)]
            if len(m.group(1)) > 30:
                self._fail(_tspan(tok), "E108", "duration is too large")
            within = ast.Duration(float(m.group(1)) * scale, str(tok), _tspan(tok))
        return ast.TakeOp(self._int([children[0]]), within, _span(meta))

    @v_args(meta=True)
    def enumerate_op(self, meta: Meta, children: list[Token | None]) -> ast.EnumerateOp:
        toks = [c for c in children if c is not None]
        return ast.EnumerateOp(self._int(toks) if toks else None, _span(meta))

    @v_args(meta=True)
    def through_op(self, meta: Meta, children: list[Token]) -> ast.ThroughOp:
        return ast.ThroughOp(self._ref(children[0]), _span(meta))

    @v_args(meta=True)
    def echo_op(self, meta: Meta, children: list[Token]) -> ast.EchoOp:
        return ast.EchoOp(tuple(self._ref(t) for t in children), _span(meta))

    @v_args(meta=True)
    def items_op(self, meta: Meta, children: list[Any]) -> ast.ItemsOp:
        return ast.ItemsOp(_span(meta))

    @v_args(meta=True)
    def events_op(self, meta: Meta, children: list[Any]) -> ast.EventsOp:
        return ast.EventsOp(_span(meta))

    @v_args(meta=True)
    def where_op(self, meta: Meta, children: list[Any]) -> ast.WhereOp:
        return ast.WhereOp(children[0], _span(meta))

    @v_args(meta=True)
    def filter_op(self, meta: Meta, children: list[Token]) -> ast.FilterOp:
        return ast.FilterOp(_name(children[0]), _span(meta))

    @v_args(meta=True)
    def to_op(self, meta: Meta, children: list[Token]) -> ast.ToOp:
        return ast.ToOp(self._ref(children[0]), _span(meta))

    @v_args(meta=True)
    def sink_op(self, meta: Meta, children: list[Token]) -> ast.SinkOp:
        return ast.SinkOp(_name(children[0]), _span(meta))

    # ---- expressions
    @v_args(meta=True)
    def field_ref(self, meta: Meta, children: list[Token]) -> ast.FieldPath:
        return ast.FieldPath(tuple(_name(t) for t in children), _span(meta))

    @v_args(meta=True)
    def binary(self, meta: Meta, children: list[Any]) -> ast.BinaryExpr:
        left, op, right = children
        depth = 1 + max(_depth(left), _depth(right))
        span = _span(meta)
        if depth > MAX_EXPR_DEPTH:
            raise DiagnosticError([_too_deep(self.filename, span)])
        return ast.BinaryExpr(str(op), left, right, _tspan(op), span, depth)

    @v_args(meta=True)
    def unary(self, meta: Meta, children: list[Any]) -> ast.UnaryExpr:
        op, operand = children
        depth = 1 + _depth(operand)
        span = _span(meta)
        if depth > MAX_EXPR_DEPTH:
            raise DiagnosticError([_too_deep(self.filename, span)])
        return ast.UnaryExpr(str(op), operand, span, depth)

    def start(self, children: list[ast.Decl]) -> list[ast.Decl]:
        return children


class _Return:
    """The `-> T` of a hook signature, told apart from its parameter types."""

    def __init__(self, type: ast.TypeExpr) -> None:
        self.type = type


def _depth(node: Any) -> int:
    return int(getattr(node, "depth", 1))


# ---------------------------------------------------------------------------------------------
# Syntax errors in the language's words


def _terminal_texts() -> dict[str, str]:
    texts: dict[str, str] = {
        "NAME": "a name",
        "STRING": "a string",
        "INT": "a whole number",
        "FLOAT": "a number",
        "DURATION": "a duration such as 500ms, 10s or 5m",
        "$END": "end of file",
    }
    for term in _lark().terminals:
        if isinstance(term.pattern, PatternStr):
            texts[term.name] = f"'{term.pattern.value}'"
    return texts


_KEYWORD_RE = re.compile(r"[a-z_]+")


def _is_keyword(text: str) -> bool:
    return text.startswith("'") and bool(_KEYWORD_RE.fullmatch(text[1:-1]))


# After these tokens the parser wants one particular kind of thing: say so by its name.
# Each phrase applies only if the parser's expected set has the terminal in the second slot.
_PHRASES: dict[str, tuple[str, str]] = {
    "app": ("an app name", "NAME"),
    "record": ("a record name", "NAME"),
    "topic": ("a topic name", "NAME"),
    "agent": ("an agent name", "NAME"),
    "hooks": ('the hooks module path as a string, such as "hooks.py"', "STRING"),
    "from": ("a topic name", "NAME"),
    "&": ("a topic name", "NAME"),
    "process": ("a hook name", "NAME"),
    "filter": ("a hook name", "NAME"),
    "sink": ("a hook name", "NAME"),
    "group_by": ("a field name or a key hook name", "NAME"),
    ".": ("a field name", "NAME"),
    "through": ('a topic name, or a Kafka topic name in quotes such as "audit"', "NAME"),
    "to": ('a topic name, or a Kafka topic name in quotes such as "audit"', "NAME"),
    "echo": ('a topic name, or a Kafka topic name in quotes such as "audit"', "NAME"),
    "take": ("the batch size, a whole number", "INT"),
    "within": ("a duration such as 500ms, 10s or 5m", "DURATION"),
    "partitions": ("the number of partitions, a whole number", "INT"),
    "enumerate": ("the first number to count from, or '|'", "INT"),
    "name": ('the Kafka topic name in quotes, such as "orders.v1"', "STRING"),
    ":": ("a type", "NAME"),
    "key": ("a key type", "NAME"),
    "->": ("a return type", "NAME"),
    "[": ("a type", "NAME"),
    "where": ("an expression", "INT"),
    "and": ("an expression", "INT"),
    "or": ("an expression", "INT"),
    "not": ("an expression", "INT"),
    "=": ("a default value", "INT"),
}
for _op in ("==", "!=", "<", "<=", ">", ">=", "+", "-", "*", "/", "%", "("):
    _PHRASES[_op] = ("an expression", "INT")


def _previous_token(text: str, pos: int) -> Token | None:
    last: Token | None = None
    try:
        for tok in _lark().lex(text[:pos]):
            last = tok
    except UnexpectedInput:
        pass
    return last


def _expected_phrase(expected: set[str], text: str, pos: int) -> str:
    texts = _terminal_texts()
    if expected >= {"PROCESS", "GROUP_BY", "TAKE"}:
        return "an operation (" + ", ".join(OP_KEYWORDS) + ")"
    prev = _previous_token(text, pos)
    if prev is not None and str(prev) in _PHRASES:
        phrase, needs = _PHRASES[str(prev)]
        if needs in expected:
            return phrase
    decls = {"APP", "RECORD", "TOPIC", "HOOKS", "AGENT"}
    rest = expected - decls - {"$END"} if expected >= decls else expected - {"$END"}
    shown = sorted({texts.get(t, t) for t in rest}, key=lambda s: (s.startswith("'"), s))
    if expected >= decls:
        if not shown:
            return "a declaration (app, record, topic, hooks or agent)"
        shown.append("a new declaration")
    if not shown:
        return "end of file"
    if len(shown) == 1:
        return shown[0]
    return "one of " + ", ".join(shown)


def _eof_span(text: str) -> Span:
    stripped = text.rstrip()
    pos = len(stripped)
    line = stripped.count("\n") + 1
    col = pos - (stripped.rfind("\n") + 1) + 1
    return Span(line, col, line, col, pos, pos)


def _syntax_diagnostic(e: UnexpectedInput, text: str, filename: str) -> Diagnostic:
    if isinstance(e, UnexpectedCharacters):
        pos = e.pos_in_stream or 0
        line, col = e.line, e.column
        char = text[pos] if pos < len(text) else ""
        span = Span(line, col, line, col + 1, pos, pos + 1)
        expected = set(e.allowed or ())
        if char == '"':
            end = text.find("\n", pos)
            end = len(text) if end < 0 else end
            span = Span(line, col, line, col + max(end - pos, 1), pos, end)
            return Diagnostic.error(filename, span, "E105", "unterminated string",
                                    ['close the string with " on the same line'])  # fmt: skip
        shown = repr(char)
        if char == "`":
            return Diagnostic.error(
                filename, span, "E102", "unterminated or invalid backquoted name",
                ["a backquoted name is a plain identifier in backquotes, such as `from`"],
            )  # fmt: skip
        m = re.match(r"[0-9]+(\.[0-9]+)?[A-Za-z_]+", text[pos:])
        if m and "DURATION" in expected:
            span = Span(line, col, line, col + len(m.group(0)), pos, pos + len(m.group(0)))
            return Diagnostic.error(filename, span, "E108",
                                    f"invalid duration '{m.group(0)}'",
                                    ["durations look like 500ms, 10s, 5m or 1h"])  # fmt: skip
        return Diagnostic.error(
            filename, span, "E102", f"unexpected character {shown}",
            [f"expected {_expected_phrase(expected, text, pos)}"] if expected else [],
        )  # fmt: skip
    assert isinstance(e, UnexpectedToken)
    tok = e.token
    expected = set(e.accepts or e.expected or ())
    if tok.type == "$END":
        span = _eof_span(text)
        return Diagnostic.error(
            filename, span, "E104", "unexpected end of file",
            [f"expected {_expected_phrase(expected, text, len(text))}"],
        )  # fmt: skip
    span = _tspan(tok)
    pos = span.start
    wanted = _expected_phrase(expected, text, pos)
    texts = _terminal_texts()
    word = str(tok)
    found = f"'{word}'" if len(word) <= 40 else f"'{word[:37]}...'"
    keywords = sorted(texts[t][1:-1] for t in expected if t in texts and _is_keyword(texts[t]))
    if tok.type == "NAME" and keywords:
        hint = did_you_mean(word, keywords)
        if wanted.startswith("an operation"):
            return Diagnostic.error(filename, span, "E106", f"unknown operation '{word}'",
                                    hint or [f"expected {wanted}"])  # fmt: skip
        if hint:
            return Diagnostic.error(filename, span, "E106", f"unknown keyword '{word}'",
                                    hint)  # fmt: skip
    if _is_keyword(texts.get(tok.type, "")) and "NAME" in expected:
        return Diagnostic.error(
            filename, span, "E103", f"expected {wanted}, found keyword '{word}'",
            [f"write `{word}` in backquotes to use it as a name"],
        )  # fmt: skip
    if tok.type in ("INT", "FLOAT") and "DURATION" in expected:
        m = re.match(r"[0-9.]+[A-Za-z_]+", text[pos:])
        if m:
            bad = m.group(0)
            span = Span(span.line, span.col, span.line, span.col + len(bad), pos, pos + len(bad))
            return Diagnostic.error(filename, span, "E108", f"invalid duration '{bad}'",
                                    ["durations look like 500ms, 10s, 5m or 1h"])  # fmt: skip
        return Diagnostic.error(filename, span, "E108", f"duration '{word}' has no unit",
                                [f"write {word}s for seconds, or use ms, m or h"])  # fmt: skip
    return Diagnostic.error(filename, span, "E103", f"expected {wanted}, found {found}")
