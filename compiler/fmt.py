"""`streamc fmt`: one canonical layout for .sdl source, every comment kept.

Like gofmt and black there are no options. The layout:

- declarations one after another, with at most one blank line wherever the source had any;
- `app` and `topic` declarations on one line; a `record` or `hooks` block with one field or
  signature per line, indented four spaces, and its `}` on a line of its own;
- an agent on one line when it has at most three operations, no comment inside and fits in
  100 columns; otherwise `agent NAME =`, then the source and each `| operation` on lines of
  their own, indented four spaces;
- inside a line one space between tokens, none inside `a.b`, `list[T]`, `f(T)`, before `,`
  `:` `?` `)` `]`, or after a unary minus; trailing comments of consecutive lines aligned two
  spaces after the longest of them.

The structure comes from the parser's tree (its spans say where each declaration, field and
operation is) and the text of each line from the tokens (`parser.lex`), so a new kind of
declaration or operation is laid out by the same rules without work here. A construct the
formatter does not know that spans several lines keeps its original text. Comments are not in
the tree: each is placed by its position, before or after the line it sits next to. A comment
inside a construct that becomes one line (between `topic` and its name, say) has no place in
the layout: then the file is refused (`FormatError`) rather than the comment lost. The result
is parsed again and must give the same tree, spans aside, with the same comments in the same
order; anything else is refused too.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from . import ast
from .parser import lex, parse

INDENT = "    "
MAX_WIDTH = 100
MAX_ONE_LINE_OPS = 3

# Spacing between two tokens of one line, by their text.
_NO_SPACE_BEFORE = frozenset({",", ")", "]", "?", ":", "."})
_NO_SPACE_AFTER = frozenset({"(", "[", "."})
# After these a `-` is a sign, not a subtraction; keywords (any word token that is not a
# NAME or a value) count too.
_VALUES = frozenset({"NAME", "INT", "FLOAT", "STRING", "DURATION", "TRUE", "FALSE", "NULL"})


class FormatError(Exception):
    """The file cannot be laid out without losing or changing something; nothing is written."""

    def __init__(self, message: str, line: int = 0, col: int = 0) -> None:
        super().__init__(message)
        self.message, self.line, self.col = message, line, col


class _Tok(NamedTuple):
    type: str
    text: str
    start: int
    end: int
    line: int
    col: int


def _tokens(text: str) -> Iterator[_Tok]:
    for t in lex(text):
        yield _Tok(t.type, str(t), t.start_pos or 0, t.end_pos or 0, t.line or 0,
                   t.column or 0)


@dataclass
class _Line:
    indent: int  # in levels
    code: str  # "" for a line holding only a comment, or a blank line
    comment: str | None = None  # a trailing comment, or the whole line's comment
    blank: bool = False
    verbatim: bool = False  # original text of a construct the formatter does not know


def format_source(text: str, filename: str) -> str:
    """`text` in the canonical layout. Raises `DiagnosticError` (E1xx) when it does not
    parse, `FormatError` when a comment cannot be placed."""
    module = parse(text, filename)
    out = _Formatter(module).run()
    _check_same(module, out, filename)
    return out


def _check_same(module: ast.Module, out: str, filename: str) -> None:
    """The formatted text must mean what the source meant and keep every comment."""
    try:
        again = parse(out, filename)
    except Exception as error:  # a bug here must never overwrite the user's file
        raise FormatError(f"internal error: the formatted text does not parse ({error})") \
            from None  # fmt: skip
    if shape(again) != shape(module):
        raise FormatError("internal error: formatting would change the program's meaning")
    if _comments(out) != _comments(module.text):
        raise FormatError("internal error: formatting would lose or reorder a comment")


def _comments(text: str) -> list[str]:
    return [str(t).rstrip() for t in lex(text) if t.type == "COMMENT"]


def shape(node: Any) -> Any:
    """A node as plain nested tuples without spans: two trees with the same shape mean the
    same program, however they are laid out."""
    if isinstance(node, ast.Module):
        return tuple(shape(d) for d in node.decls)
    if isinstance(node, tuple | list):
        return tuple(shape(n) for n in node)
    if dataclasses.is_dataclass(node):
        return (type(node).__name__, *(shape(getattr(node, f.name))
                                       for f in dataclasses.fields(node)
                                       if f.name not in ("span", "depth")))  # fmt: skip
    return node


def _join(tokens: Sequence[_Tok]) -> str:
    """The tokens of one line, with canonical spaces between them."""
    out: list[str] = []
    prev: _Tok | None = None
    unary = False  # the previous token was a sign
    for tok in tokens:
        text = tok.text
        if prev is not None:
            p = prev.text
            glued = (
                text in _NO_SPACE_BEFORE
                or p in _NO_SPACE_AFTER
                or unary
                or (text in ("(", "[") and prev.type == "NAME")
                or (p == "{" and text == "}")
            )
            if not glued:
                out.append(" ")
        out.append(text)
        unary = text == "-" and (prev is None or (prev.type not in _VALUES
                                                  and prev.text not in (")", "]")))  # fmt: skip
        prev = tok
    return "".join(out)


class _Formatter:
    def __init__(self, module: ast.Module) -> None:
        self.text = module.text
        self.module = module
        self.code: list[_Tok] = []
        self.comments: list[_Tok] = []
        for tok in _tokens(module.text):
            if tok.type == "COMMENT":
                self.comments.append(tok)
            elif tok.type != "WS":
                self.code.append(tok)
        self.starts = [t.start for t in self.code]
        self.comment_starts = [c.start for c in self.comments]
        self.next_comment = 0
        self.pos = 0  # where the last unit placed ended in the source
        self.lines: list[_Line] = []

    # ---- tokens and comments by source position

    def tokens(self, start: int, end: int) -> list[_Tok]:
        lo = bisect.bisect_left(self.starts, start)
        hi = bisect.bisect_left(self.starts, end)
        return self.code[lo:hi]

    def token_before(self, pos: int, text: str) -> _Tok:
        """The last code token spelled `text` that starts before `pos`."""
        i = bisect.bisect_left(self.starts, pos) - 1
        while self.code[i].text != text:
            i -= 1
        return self.code[i]

    def token_after(self, pos: int, text: str) -> _Tok:
        i = bisect.bisect_left(self.starts, pos)
        while self.code[i].text != text:
            i += 1
        return self.code[i]

    def has_comment(self, start: int, end: int) -> bool:
        i = bisect.bisect_left(self.comment_starts, start)
        return i < len(self.comments) and self.comments[i].start < end

    def gap(self, upto: int, indent: int) -> None:
        """Place the comments between the last unit and `upto`, and the blank lines."""
        prev_end = self.pos
        while self.next_comment < len(self.comments):
            c = self.comments[self.next_comment]
            if c.start >= upto:
                break
            self.next_comment += 1
            between = self.text[prev_end : c.start]
            last = self.lines[-1] if self.lines else None
            if (prev_end == self.pos and "\n" not in between and last is not None
                    and last.code and last.comment is None):  # fmt: skip
                last.comment = c.text.rstrip()
            else:
                if between.count("\n") >= 2:
                    self.lines.append(_Line(0, "", blank=True))
                self.lines.append(_Line(indent, "", c.text.rstrip()))
            prev_end = c.end
        if self.text[prev_end:upto].count("\n") >= 2:
            self.lines.append(_Line(0, "", blank=True))
        self.pos = upto

    def unit(self, start: int, end: int, indent: int, prefix: str = "",
             what: str = "") -> None:  # fmt: skip
        """One line of output for the source from `start` to `end`."""
        self.gap(start, indent)
        if self.has_comment(start, end):
            c = self.comments[self.next_comment]
            raise FormatError(
                f"a comment inside {what or 'this line'} has no place in the layout; move it "
                "to the end of the line or onto a line of its own",
                c.line, c.col,
            )  # fmt: skip
        self.lines.append(_Line(indent, prefix + _join(self.tokens(start, end))))
        self.pos = end

    def verbatim(self, start: int, end: int, indent: int, prefix: str = "") -> None:
        """A construct the formatter does not know, over several lines: kept as written."""
        self.gap(start, indent)
        while (self.next_comment < len(self.comments)
               and self.comments[self.next_comment].start < end):  # fmt: skip
            self.next_comment += 1  # part of the text kept
        first, *rest = self.text[start:end].split("\n")
        self.lines.append(_Line(indent, prefix + first.rstrip(), verbatim=True))
        self.lines.extend(_Line(0, r.rstrip(), verbatim=True) for r in rest)
        self.pos = end

    def any_unit(self, start: int, end: int, indent: int, prefix: str = "",
                 what: str = "") -> None:  # fmt: skip
        if "\n" in self.text[start:end]:
            self.verbatim(start, end, indent, prefix)
        else:
            self.unit(start, end, indent, prefix, what)

    # ---- declarations

    def run(self) -> str:
        for decl in self.module.decls:
            if isinstance(decl, ast.RecordDecl):
                self.block(decl, decl.fields, "record")
            elif isinstance(decl, ast.HooksDecl):
                self.block(decl, decl.hooks, "hooks block")
            elif isinstance(decl, ast.AgentDecl):
                self.agent(decl)
            elif isinstance(decl, _LINE_DECLS):
                self.unit(decl.span.start, decl.span.end, 0, what="this declaration")
            else:  # a declaration added to the language since: one line, or as written
                span: Any = getattr(decl, "span")  # noqa: B009  # every node has one
                self.any_unit(span.start, span.end, 0, what="this declaration")
        self.gap(len(self.text), 0)
        return self.render()

    def block(self, decl: ast.RecordDecl | ast.HooksDecl,
              items: Sequence[ast.FieldDecl | ast.HookSig], what: str) -> None:  # fmt: skip
        start, end = decl.span.start, decl.span.end
        if not items and not self.has_comment(start, end):
            self.unit(start, end, 0)
            return
        brace = self.token_after(decl.name.span.end if isinstance(decl, ast.RecordDecl)
                                 else decl.path.span.end, "{")  # fmt: skip
        self.unit(start, brace.end, 0, what=f"the head of this {what}")
        for item in items:
            self.unit(item.span.start, item.span.end, 1, what="this line")
        self.gap(end - 1, 1)  # comments after the last item stay inside the block
        self.unit(end - 1, end, 0)

    def agent(self, decl: ast.AgentDecl) -> None:
        start, end = decl.span.start, decl.span.end
        bars = [self.token_before(op.span.start, "|") for op in decl.ops]
        if len(decl.ops) <= MAX_ONE_LINE_OPS and not self.has_comment(start, end):
            one = _join(self.tokens(start, end))
            if len(one) <= MAX_WIDTH and all("\n" not in self.text[op.span.start:op.span.end]
                                             or _known(op) for op in decl.ops):  # fmt: skip
                self.unit(start, end, 0)
                return
        source = decl.source.span
        equals = self.token_before(source.start, "=")
        self.unit(start, equals.end, 0, what="the head of this agent")
        self.unit(source.start, source.end, 1, what="this agent's source")
        for op, bar in zip(decl.ops, bars, strict=True):
            self.gap(bar.start, 1)
            if self.has_comment(bar.start, op.span.start):
                self.unit(bar.start, op.span.end, 1, what="this operation")
                continue
            self.pos = op.span.start  # no blank line between `|` and its operation
            if _known(op):
                self.unit(op.span.start, op.span.end, 1, "| ", what="this operation")
            else:
                self.any_unit(op.span.start, op.span.end, 1, "| ", what="this operation")

    # ---- output

    def render(self) -> str:
        lines: list[_Line] = []
        for line in self.lines:
            if line.blank:
                prev = lines[-1] if lines else None
                if prev is None or prev.blank or (prev.code.endswith(("{", "="))
                                                  and not prev.verbatim):  # fmt: skip
                    continue
            elif line.code == "}" and lines and lines[-1].blank:
                lines.pop()
            lines.append(line)
        while lines and lines[-1].blank:
            lines.pop()
        out: list[str] = []
        for run in _runs(lines):
            width = max((len(INDENT * r.indent + r.code) for r in run), default=0)
            for r in run:
                code = INDENT * r.indent + r.code
                if r.blank:
                    out.append("")
                elif r.comment is None:
                    out.append(code)
                elif not r.code:
                    out.append(INDENT * r.indent + r.comment)
                else:
                    out.append(code.ljust(width) + "  " + r.comment)
        return "\n".join(out) + "\n" if out else ""


_LINE_DECLS = (ast.AppDecl, ast.TopicDecl)  # declarations always written on one line


def _known(op: Any) -> bool:
    return isinstance(op, _KNOWN_OPS)


_KNOWN_OPS = (ast.ProcessOp, ast.GroupByOp, ast.TakeOp, ast.EnumerateOp, ast.ThroughOp,
              ast.EchoOp, ast.ItemsOp, ast.EventsOp, ast.WhereOp, ast.FilterOp, ast.ToOp,
              ast.SinkOp)  # fmt: skip


def _runs(lines: list[_Line]) -> Iterator[list[_Line]]:
    """Lines in groups: each run of consecutive code lines with trailing comments (aligned
    together), and every other line on its own."""
    run: list[_Line] = []
    for line in lines:
        if line.code and line.comment is not None and not line.verbatim:
            run.append(line)
            continue
        if run:
            yield run
            run = []
        yield [line]
    if run:
        yield run
