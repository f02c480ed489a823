"""Text to `ast.Module`: the Lark LALR parser, and syntax errors in the language's own words.

`parse` is the only entry point. A syntax error becomes a `DiagnosticError` whose message names
what the language expected ("expected a record name", "unexpected end of file", "unknown
operation 'grop_by'" with a did-you-mean) rather than Lark's terminal names, in the manner of
Preql's parser. Only the first syntax error is reported: after it, the tree is not trustworthy
enough to check.

The AST itself is built by the callbacks in `parse_ast.py`, run as the parser reduces.
"""

from __future__ import annotations

import functools
import importlib.resources
import re
from collections.abc import Iterator
from typing import Any

from lark import Lark, Token
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken
from lark.lexer import PatternStr
from lark.parsers.lalr_analysis import Shift

from . import ast
from .diagnostics import Diagnostic, DiagnosticError, Span, did_you_mean
from .gcpause import gc_paused
from .parse_ast import MAX_EXPR_DEPTH as MAX_EXPR_DEPTH
from .parse_ast import _AstError as _AstError
from .parse_ast import _ToAst, _tspan

DECL_KEYWORDS = ("app", "record", "topic", "hooks", "table", "agent", "requires")
OP_KEYWORDS = (
    "process", "group_by", "take", "enumerate", "through", "echo", "items", "events", "where",
    "filter", "to", "sink", "aggregate", "distinct", "select", "join", "left", "outer",
)  # fmt: skip


class _WholeWords:
    """Lex every word as a whole, even where the grammar accepts no name.

    The contextual lexer only tries the terminals the parser can accept next, so where a
    keyword is expected and a name is not, `tout` would lex as the keyword `to` followed by
    `ut`. With NAME always tried, a word is matched whole (Lark turns a NAME that spells a
    keyword accepted here into that keyword), and a word that is no keyword reaches the
    parser as a name it did not expect: "unknown operation 'tout'".
    """

    always_accept = ("NAME",)

    def process(self, stream: Iterator[Token]) -> Iterator[Token]:
        return stream


class _Mismatch(Exception):
    """The fast path met something it leaves to Lark (see `_FastParser`)."""


class _FastParser:
    """Lark's LALR tables and AST callbacks, run by a loop with its own lexer, for valid text.

    Lark's contextual lexer and parser loop cost more per token than building the AST: the
    lexer matches whitespace as tokens, counts lines token by token and tries every terminal
    the state accepts; the loop looks rules up by hashing them. Here whitespace and comments
    are skipped in one match, lines are counted only across them, a word is a keyword the
    state accepts or else a name (as `_WholeWords` makes Lark do), and the tables are turned
    into plain dicts once. On anything unexpected (a token the state cannot take, text no
    token matches, a number the state does not expect) it gives up, and so does `parse` on
    any error: the text is parsed again by Lark itself, so every diagnostic comes from one path.
    """

    _SKIP = re.compile(r"(?:[ \t\r\n\f]+|#[^\n]*)*")
    # Whitespace and comments (atomic: a comment is never taken back to make a token of its
    # words), then one token: a word, a number's first digit, a string or punctuation (groups 1
    # to 4).
    _TOKEN = re.compile(
        r'(?>(?:[ \t\r\n\f]+|#[^\n]*)*)(?:([A-Za-z_][A-Za-z0-9_]*|`[A-Za-z_][A-Za-z0-9_]*`)|([0-9])'
        r'|("[^"\\\n]*(?:\\[^\n][^"\\\n]*)*")|(->|==|!=|<=|>=|[|=&{}\[\](),.:?<>+\-*/%]))'
    )

    def __init__(self, lark: Lark) -> None:
        parser = lark.parser.parser.parser  # the LALR parser proper: tables and callbacks
        table, callbacks = parser.parse_table, parser.callbacks
        assert not any(isinstance(k, str) for k in callbacks)  # no callbacks on terminals
        self.start, self.end = table.start_states["start"], table.end_states["start"]
        # state -> symbol -> next state (a shift, or the goto after a reduction), or the
        # reduction: (callback, number of children, the rule's name)
        # (Lark names rules with Tokens, whose Python-level __eq__ slows every lookup: the
        # names become plain strings.)
        self.actions: dict[int, dict[str, Any]] = {
            state: {
                str(symbol): arg if action is Shift
                else (None if _passes_through(arg) else callbacks[arg], len(arg.expansion),
                      str(arg.origin.name))
                for symbol, (action, arg) in row.items()
            }
            for state, row in table.states.items()
        }  # fmt: skip
        keywords: dict[str, str] = {}  # "take" -> "TAKE"
        self.punctuation: dict[str, str] = {}  # "->" -> its terminal's name
        for term in lark.terminals:
            if isinstance(term.pattern, PatternStr):
                word = term.pattern.value
                (keywords if word.isidentifier() else self.punctuation)[word] = term.name
        numbers = [(name, re.compile(lark.get_terminal(name).pattern.to_regexp()))
                   for name in ("DURATION", "FLOAT", "INT")]  # Lark's order: by priority
        # Per state, the keywords it accepts and the number terminals to try, in order.
        self.keywords = {state: {w: t for w, t in keywords.items() if t in row}
                         for state, row in self.actions.items()}  # fmt: skip
        self.numbers = {state: [(n, r) for n, r in numbers if n in row]
                        for state, row in self.actions.items()}  # fmt: skip

    def parse(self, text: str) -> list[ast.Decl]:
        actions, keywords, numbers, punctuation = (
            self.actions, self.keywords, self.numbers, self.punctuation)  # fmt: skip
        skip, match, new_str = self._SKIP.match, self._TOKEN.match, str.__new__
        states: list[int] = [self.start]
        values: list[Any] = []
        line, line_start, pos, end = 1, 0, 0, len(text)
        tok: Token | None = None
        while True:
            m = match(text, pos)
            if m is None:
                if skip(text, pos).end() == end:  # type: ignore[union-attr]  # it matches ""
                    break
                raise _Mismatch
            group = m.lastindex
            begin = m.start(group)  # type: ignore[arg-type]  # one group always matches
            if begin > pos:
                newlines = text.count("\n", pos, begin)
                if newlines:
                    line += newlines
                    line_start = text.rindex("\n", pos, begin) + 1
                pos = begin
            state = states[-1]
            after = m.end()
            value = m.group(group)  # type: ignore[arg-type]
            if group == 1:
                kind = keywords[state].get(value, "NAME")
            elif group == 4:
                kind = punctuation[value]
            elif group == 3:
                kind = "STRING"
            else:
                for name, regex in numbers[state]:
                    found = regex.match(text, pos)
                    if found is not None:
                        kind, value, after = name, found.group(), found.end()
                        break
                else:
                    raise _Mismatch
            col = pos - line_start + 1
            # Token._future_new, inlined: this runs for every token.
            tok = new_str(Token, value)
            tok.type, tok.value, tok.start_pos, tok.end_pos = kind, value, pos, after
            tok.line, tok.column, tok.end_line, tok.end_column = line, col, line, col + after - pos
            pos = after
            while True:
                action = actions[state].get(kind)
                if action is None:
                    raise _Mismatch
                if type(action) is int:
                    states.append(action)
                    values.append(tok)
                    break
                callback, size, name = action
                if callback is None:  # `?rule` of one symbol: its value is that symbol's
                    del states[-1]
                elif size:
                    children = values[-size:]
                    del states[-size:], values[-size:]
                    values.append(callback(children))
                else:
                    values.append(callback([]))
                state = actions[states[-1]][name]
                states.append(state)
        while True:  # the end of the text: reduce until the start rule is complete
            action = actions[states[-1]].get("$END")
            if action is None or type(action) is int:
                raise _Mismatch
            if self._reduce(action, states, values) == self.end:
                return values[-1]  # type: ignore[no-any-return]

    def _reduce(self, action: tuple[Any, int, str], states: list[int], values: list[Any]) -> int:
        callback, size, name = action
        if callback is None:
            del states[-1]
        elif size:
            children = values[-size:]
            del states[-size:], values[-size:]
            values.append(callback(children))
        else:
            values.append(callback([]))
        state = self.actions[states[-1]][name]
        states.append(state)
        return state  # type: ignore[no-any-return]


def _passes_through(rule: Any) -> bool:
    """A `?rule` reduced from one symbol, such as `?atom: field_ref`: Lark's callback returns
    that symbol's value, so the loop need not call it (there are eight for every literal)."""
    return bool(rule.options.expand1) and rule.alias is None and len(rule.expansion) == 1


def _grammar() -> str:
    return (importlib.resources.files("streamc.grammar") / "streamc.lark").read_text(
        encoding="utf-8"
    )


@functools.cache
def _lark() -> Lark:
    # The AST is built by callbacks run as the parser reduces (no parse tree), which halves the
    # time of a big file. Spans come from the tokens themselves, so every token is kept
    # (keep_all_tokens) and each callback picks out what it needs.
    return Lark(
        _grammar(),
        parser="lalr",
        lexer="contextual",
        keep_all_tokens=True,
        maybe_placeholders=True,
        transformer=_ToAst(),
        postlex=_WholeWords(),
    )


@functools.cache
def _fast_parser() -> _FastParser:
    return _FastParser(_lark())


def lex(text: str) -> Iterator[Token]:
    """Every token of `text` as the grammar defines them, whitespace (WS) and comments
    (COMMENT) included: what the formatter and the language server read the layout from.

    A word is a keyword token wherever it spells one (the parser alone knows when it is a
    name). Raises Lark's `UnexpectedInput` at text no token matches.
    """
    # Lone CRs end lines as in `parse`, one character for one so offsets stay the same.
    return _lark().lex(_LONE_CR.sub("\n", text) if "\r" in text else text, dont_ignore=True)


def parse(text: str, filename: str) -> ast.Module:
    """Parse an .sdl source. Raises `DiagnosticError` (E1xx diagnostics) if it is invalid.

    After a syntax error the parser skips to the next declaration and carries on, so one run
    reports the first syntax error of each broken declaration (up to `MAX_SYNTAX_ERRORS`).
    """
    diagnostics: list[Diagnostic] = []
    if "\r" in text:
        # A lone CR (old Mac files) ends a line too. Replacing it one character for one keeps
        # every offset, and gives the grammar, the line counts and the renderer one line end.
        text = _LONE_CR.sub("\n", text)
    current = text
    budget = 4 * len(text) + 100_000  # reparsing a huge file many times is not worth it
    try:
        with gc_paused():
            return ast.Module(filename=filename, text=text,
                              decls=tuple(_fast_parser().parse(text)))  # fmt: skip
    except (UnexpectedInput, _AstError, _Mismatch):
        pass  # errors are reported from Lark's own lexer, below
    while True:
        try:
            with gc_paused():
                decls = _lark().parse(current)
        except UnexpectedInput as e:
            found = _syntax_diagnostic(e, current, filename)
            diagnostics.append(_unfinished_declaration(current, found) or found)
        except _AstError as e:
            diagnostics.append(
                Diagnostic.error(filename, e.span, e.code, e.message, e.hints)
            )
        else:
            if diagnostics:
                raise DiagnosticError(diagnostics)
            return ast.Module(filename=filename, text=text, decls=tuple(decls))  # type: ignore[arg-type]
        budget -= len(current)
        skipped = _skip_declaration(current, diagnostics[-1])
        if skipped is None:
            raise DiagnosticError(diagnostics)
        if len(diagnostics) >= MAX_SYNTAX_ERRORS or budget < 0:
            raise DiagnosticError(diagnostics, complete=False)
        current = skipped


MAX_SYNTAX_ERRORS = 10
_LONE_CR = re.compile(r"\r(?!\n)")
_DECL_START = re.compile(r"^[ \t]*(?:app|record|topic|hooks|table|agent)\b", re.MULTILINE)


# A line that starts a declaration: no indent, and a keyword followed by what it names. Stricter
# than _DECL_START, which must also find declarations a broken one runs into.
_NEW_DECL = re.compile(r'^(?:(?:app|record|topic|table|agent)[ \t]+[A-Za-z_`]|hooks[ \t]+")', re.M)


def _offset(text: str, line: int, col: int) -> int:
    start = 0
    for _ in range(line - 1):
        start = text.index("\n", start) + 1
    return start + col - 1


def _unfinished_declaration(text: str, error: Diagnostic) -> Diagnostic | None:
    """When `error` lies in a line that starts a declaration, or after it, the declaration before
    may have stopped short: `agent a = from t |` or `agent b =` at the end of a line. Then
    the real error is the end of that one, not the next one's first word, which the parser
    either refused or took as a name. Parsing the declaration before on its own tells.
    """
    pos = _offset(text, error.line, error.col)
    line_end = text.find("\n", pos)
    ends = len(text) if line_end < 0 else line_end
    starts = [m.start() for m in _NEW_DECL.finditer(text, 0, ends) if m.start() <= pos][-2:]
    if not starts:
        return None
    begin = starts[0] if len(starts) == 2 else 0
    segment = text[begin : starts[-1]]
    try:
        _lark().parse(segment)
    except UnexpectedToken as e:
        if e.token.type != "$END":
            return None
        expected = set(e.accepts or e.expected or ())
        wanted = _expected_phrase(expected, segment, len(segment))
    except (UnexpectedInput, _AstError):
        return None
    else:
        return None
    end = _eof_span(segment)
    lines = text.count("\n", 0, begin)
    span = Span(end.line + lines, end.col, end.end_line + lines, end.end_col,
                end.start + begin, end.end + begin)  # fmt: skip
    return Diagnostic.error(error.file, span, "E103", "unexpected end of declaration",
                            [f"expected {wanted}"])  # fmt: skip


def _skip_declaration(text: str, error: Diagnostic) -> str | None:
    """The text with the declaration holding `error` blanked out, or None if nothing follows.

    Blanking (spaces for every character but newlines) keeps every later line and column
    where it was, so the next round's diagnostics point at the user's real text. The broken
    declaration starts at the last declaration keyword that begins a line at or before the
    error, and ends where the next one begins a line after the error's line.
    """
    lines = text.split("\n")
    line = min(max(error.line, 1), len(lines))
    error_pos = sum(len(x) + 1 for x in lines[: line - 1]) + max(error.col - 1, 0)
    line_end = text.find("\n", error_pos)
    if line_end < 0:
        return None
    following = _DECL_START.search(text, line_end + 1)
    if following is None:
        return None
    start = 0
    for m in _DECL_START.finditer(text, 0, error_pos + 1):
        start = m.start()
    gap = text[start : following.start()]
    return text[:start] + re.sub(r"[^\n]", " ", gap) + text[following.start() :]


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
    "table": ("a table name", "NAME"),
    "aggregate": ("a table name", "NAME"),
    "select": ("a record name", "NAME"),
    "join": ("a table name", "NAME"),
    "on": ("'key' or a field name", "NAME"),
    "agent": ("an agent name", "NAME"),
    "hooks": ('the hooks module path as a string, such as "hooks.py"', "STRING"),
    "requires": ('a Python requirement as a string, such as "httpx>=0.27"', "STRING"),
    "from": ("a topic name", "NAME"),
    "&": ("a topic name", "NAME"),
    "process": ("a hook name", "NAME"),
    "filter": ("a hook name", "NAME"),
    "sink": ("a hook name", "NAME"),
    "group_by": ("a field name or a key hook name", "NAME"),
    ".": ("a field name", "NAME"),
    "through": (
        'a topic name, or a Kafka topic name in quotes such as "audit"',
        "NAME",
    ),
    "to": ('a topic name, or a Kafka topic name in quotes such as "audit"', "NAME"),
    "echo": ('a topic name, or a Kafka topic name in quotes such as "audit"', "NAME"),
    "take": ("the batch size, a whole number", "INT"),
    "within": ("a duration such as 500ms, 10s or 5m", "DURATION"),
    "tumbling": ("the window size, a duration such as 1m", "DURATION"),
    "hopping": ("the window size, a duration such as 5m", "DURATION"),
    "every": ("the window advance, a duration such as 1m", "DURATION"),
    "session": ("the session gap, a duration such as 30m", "DURATION"),
    "grace": ("the grace period, a duration such as 10s", "DURATION"),
    "emit": ("'updates' or 'final'", "UPDATES"),
    "late": ("'to' and a topic", "TO"),
    "timestamp": ("the name of the record field holding the event time", "NAME"),
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
    decls = {"APP", "RECORD", "TOPIC", "HOOKS", "TABLE", "AGENT", "REQUIRES"}
    rest = expected - decls - {"$END"} if expected >= decls else expected - {"$END"}
    shown = sorted(
        {texts.get(t, t) for t in rest}, key=lambda s: (s.startswith("'"), s)
    )
    if expected >= decls:
        if not shown:
            return "a declaration (app, record, topic, hooks, table, agent or requires)"
        shown.append("a new declaration")
    if not shown:
        return "end of file"
    if len(shown) == 1:
        return shown[0]
    return "one of " + ", ".join(shown)


def _word_hint(word: str, keywords: list[str]) -> tuple[str, ...]:
    """Did-you-mean for a word where a keyword was expected: a misspelling (`tos` for `to`),
    or a keyword run into the name after it (`fromorders` for `from orders`)."""
    glued = max((k for k in keywords if word.startswith(k) and len(word) > len(k)),
                key=len, default=None)  # fmt: skip
    split = () if glued is None else (f"did you mean '{glued} {word[len(glued):]}'?",)
    if split and len(word) - len(glued or "") >= 2:  # a one-letter tail is a slip: `tos`
        return split
    return did_you_mean(word, keywords) or split


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
            span = Span(
                line, col, line, col + len(m.group(0)), pos, pos + len(m.group(0))
            )
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
    keywords = sorted(
        texts[t][1:-1] for t in expected if t in texts and _is_keyword(texts[t])
    )
    if tok.type == "NAME" and keywords:
        hint = _word_hint(word, keywords)
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
            span = Span(
                span.line, span.col, span.line, span.col + len(bad), pos, pos + len(bad)
            )
            return Diagnostic.error(filename, span, "E108", f"invalid duration '{bad}'",
                                    ["durations look like 500ms, 10s, 5m or 1h"])  # fmt: skip
        return Diagnostic.error(filename, span, "E108", f"duration '{word}' has no unit",
                                [f"write {word}s for seconds, or use ms, m or h"])  # fmt: skip
    return Diagnostic.error(filename, span, "E103", f"expected {wanted}, found {found}")
