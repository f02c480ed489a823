"""Diagnostics: where something is wrong in the user's files, and how it is shown.

The front end never prints and never raises on a user error: the parser raises
`DiagnosticError` (carrying diagnostics) for a syntax error, the checker returns a list of them,
and `render` turns them into the text of contract section 3:

    samples/orders.sdl:7:24: error[E201]: record Order has no field 'acount_id'
        | from orders | group_by acount_id
        |                        ^^^^^^^^^
    hint: did you mean 'account_id'?

A diagnostic may carry notes: other places that explain it (where a duplicate name was first
defined), each shown with its own source line after the hints.

Codes are stable and grouped: E1xx syntax (and unreadable input), E2xx names, E3xx types,
E4xx test files (`streamc test`, compiler/testfile.py), and W5xx warnings about the topology
(the program compiles, but will misbehave on Kafka). The table `CODES` is the single list of
them; docs/language.md documents each one.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

Severity = Literal["error", "warning", "note"]

# Every code the front end can produce, with a short title (used by the docs and the tests).
CODES: dict[str, str] = {
    "E100": "a file cannot be read",
    "E101": "a file is not valid UTF-8",
    "E102": "unexpected character",
    "E103": "unexpected token",
    "E104": "unexpected end of file",
    "E105": "unterminated string",
    "E106": "unknown keyword or operation",
    "E107": "expression, type or field path nested too deeply",
    "E108": "invalid literal",
    "E201": "unknown field",
    "E202": "unknown type or record",
    "E203": "unknown topic",
    "E204": "unknown hook",
    "E205": "hook function missing from its module",
    "E206": "hooks module cannot be read or parsed",
    "E207": "duplicate name",
    "E208": "duplicate Kafka topic name",
    "E209": "invalid or duplicate app name",
    "E210": "invalid Kafka topic name",
    "E211": "invalid hooks module path",
    "E212": "hooks import a local module that cannot be shipped",
    "E213": "unknown table",
    "E214": "unknown aggregate function",
    "E215": "table filled by more than one aggregate",
    "E216": "table field left unassigned",
    "E220": "invalid Python requirement",
    "E301": "topic type does not match the stream",
    "E302": "merged topics carry different types",
    "E303": "invalid key type",
    "E304": "operation needs a plain stream",
    "E305": "operation after a terminal operation",
    "E306": "size, duration or partition count out of range",
    "E307": "hook parameters do not match",
    "E308": "hook return type does not fit its role",
    "E309": "field access on a stream that is not of records",
    "E310": "ill-typed expression",
    "E311": "`where` condition is not a bool",
    "E312": "field default does not match the field type",
    "E313": "recursive record",
    "E314": "type not allowed here",
    "E315": "wrong number of type arguments",
    "E316": "hook annotations contradict the declaration",
    "E317": "aggregate does not fit its table field",
    "E318": "stream key does not match the table key",
    "E319": "aggregation input not partitioned like its table",
    "E320": "window option outside a windowed aggregate",
    "E321": "`window.start` or `window.end` outside a windowed aggregate",
    "E322": "hopping window advance does not divide its size",
    "E323": "event-time field is not a time",
    "E324": "reduce in a session-windowed aggregate",
    "E325": "`select` leaves a required field unset",
    "E326": "`select` value does not fit its field",
    "E327": "`select` puts a value that may be null into a field that may not",
    "E328": "table over a topic that does not fit it",
    "E329": "join of a stream and a table not partitioned alike",
    "E330": "join key does not match the table key",
    "E331": "stream join of topics not partitioned or keyed alike",
    "E401": "test file is not valid YAML",
    "E402": "unknown or misplaced field in a test file",
    "E403": "unknown topic in a test file",
    "E404": "test value does not fit its topic's type",
    "E405": "unknown agent in a test file",
    "E406": "unknown table in a test file",
    "E407": "invalid setting in a test file",
    "W501": "agents write a topic they read: an endless loop",
    "W502": "Kafka topic names that collide in Kafka's metrics",
    "W503": "table that no aggregate fills",
}


# A span on one line whose columns and offsets advance together (every token, most nodes) is
# "narrow": line, column, start offset and length in 113 bits, low bit 0, which CPython holds
# in four 30-bit digits. Any other is "wide": all six numbers, low bit 1.
_N_LEN, _N_START, _N_COL, _N_LINE = 24, 40, 24, 24
_N_START_AT = 1 + _N_LEN
_N_COL_AT = _N_START_AT + _N_START
_N_LINE_AT = _N_COL_AT + _N_COL
# Wide: bits of each number, after the flag bit (lines and columns below 2**32, offsets below
# 2**48: any text Python can hold in memory).
_OFFSET, _COL, _LINE = 48, 32, 32
_HALF = _OFFSET + _COL + _LINE  # where the span begins, then where it ends: 112 bits each
_M_OFFSET, _M_COL, _M_LINE = (1 << _OFFSET) - 1, (1 << _COL) - 1, (1 << _LINE) - 1
_M_LEN, _M_START, _M_NCOL = (1 << _N_LEN) - 1, (1 << _N_START) - 1, (1 << _N_COL) - 1


class Span(int):
    """A stretch of source text. Lines and columns count from 1; `end_col` is exclusive.

    `start`/`end` are character offsets into the text, so the exact source of a construct
    (a `where` expression, an agent's pipeline) can be sliced back out.

    The parser makes one per token and per node, millions for a big file, and each lives as
    long as the tree: so the six numbers are packed into one int (56 bytes for a span on one
    line), not a tuple of six ints at 170. The numbers are read as attributes; two spans are
    equal when all six are, since each set of numbers has exactly one packing.
    """

    __slots__ = ()

    def __new__(
        cls, line: int, col: int, end_line: int, end_col: int, start: int, end: int
    ) -> Span:
        length = end - start
        if (line == end_line and end_col - col == length and 0 <= length <= _M_LEN
                and 0 <= col <= _M_NCOL and 0 <= line < 1 << _N_LINE
                and 0 <= start <= _M_START):  # fmt: skip
            return int.__new__(cls, (((line << _N_COL | col) << _N_START | start) << _N_LEN
                                     | length) << 1)  # fmt: skip
        if not (0 <= min(line, col, end_line, end_col, start, end) and max(col, end_line, end_col)
                <= _M_COL and max(start, end) <= _M_OFFSET):  # fmt: skip
            raise ValueError(f"span out of range: {line, col, end_line, end_col, start, end}")
        packed = (((line << _COL | col) << _OFFSET | start) << _HALF
                  | (end_line << _COL | end_col) << _OFFSET | end)  # fmt: skip
        return int.__new__(cls, packed << 1 | 1)

    @property
    def line(self) -> int:
        v = int(self)
        return v >> (1 + _HALF + _COL + _OFFSET) if v & 1 else v >> _N_LINE_AT

    @property
    def col(self) -> int:
        v = int(self)
        return v >> (1 + _HALF + _OFFSET) & _M_COL if v & 1 else v >> _N_COL_AT & _M_NCOL

    @property
    def start(self) -> int:
        v = int(self)
        return v >> (1 + _HALF) & _M_OFFSET if v & 1 else v >> _N_START_AT & _M_START

    @property
    def end_line(self) -> int:
        v = int(self)
        return v >> (1 + _COL + _OFFSET) & _M_LINE if v & 1 else v >> _N_LINE_AT

    @property
    def end_col(self) -> int:
        v = int(self)
        if v & 1:
            return v >> (1 + _OFFSET) & _M_COL
        return (v >> _N_COL_AT & _M_NCOL) + (v >> 1 & _M_LEN)

    @property
    def end(self) -> int:
        v = int(self)
        if v & 1:
            return v >> 1 & _M_OFFSET
        return (v >> _N_START_AT & _M_START) + (v >> 1 & _M_LEN)

    def to(self, other: Span) -> Span:
        """The span from the start of this one to the end of `other`."""
        a, b = int(self), int(other)
        if not (a | b) & 1 and a >> _N_LINE_AT == b >> _N_LINE_AT:  # narrow, one line
            b_len = b >> 1 & _M_LEN
            length = (b >> _N_START_AT & _M_START) + b_len - (a >> _N_START_AT & _M_START)
            columns = (b >> _N_COL_AT & _M_NCOL) + b_len - (a >> _N_COL_AT & _M_NCOL)
            if 0 <= length <= _M_LEN and columns == length:
                return int.__new__(Span, (a >> _N_START_AT << _N_LEN | length) << 1)
        return Span(self.line, self.col, other.end_line, other.end_col, self.start, other.end)

    def __bool__(self) -> bool:
        return True

    def __repr__(self) -> str:
        return (f"Span(line={self.line}, col={self.col}, end_line={self.end_line}, "
                f"end_col={self.end_col}, start={self.start}, end={self.end})")  # fmt: skip

    def __reduce__(self) -> tuple[type[Span], tuple[int, int, int, int, int, int]]:
        return Span, (self.line, self.col, self.end_line, self.end_col, self.start, self.end)


class Note(NamedTuple):
    """A place that explains a diagnostic, such as the first definition of a duplicate name."""

    file: str
    line: int
    col: int
    end_line: int
    end_col: int
    message: str

    @classmethod
    def at(cls, file: str, span: Span, message: str) -> Note:
        return cls(file, span.line, span.col, span.end_line, span.end_col, message)


@dataclass(frozen=True)
class Diagnostic:
    """One message, shaped like mypy's ErrorInfo. `line == 0` means the whole file."""

    file: str
    line: int
    col: int
    end_line: int
    end_col: int
    severity: Severity
    code: str
    message: str
    hints: tuple[str, ...] = ()
    notes: tuple[Note, ...] = ()

    @classmethod
    def error(
        cls,
        file: str,
        span: Span | None,
        code: str,
        message: str,
        hints: Iterable[str] = (),
        notes: Iterable[Note] = (),
    ) -> Diagnostic:
        return cls._make("error", file, span, code, message, hints, notes)

    @classmethod
    def warning(
        cls,
        file: str,
        span: Span | None,
        code: str,
        message: str,
        hints: Iterable[str] = (),
        notes: Iterable[Note] = (),
    ) -> Diagnostic:
        """Something that compiles but is probably wrong; it never fails a command."""
        return cls._make("warning", file, span, code, message, hints, notes)

    @classmethod
    def _make(
        cls,
        severity: Severity,
        file: str,
        span: Span | None,
        code: str,
        message: str,
        hints: Iterable[str],
        notes: Iterable[Note],
    ) -> Diagnostic:
        assert (
            code in CODES
        ), code  # a new code must be added to the table (and the docs)
        assert code.startswith("W") == (severity == "warning"), code
        if span is None:
            return cls(file, 0, 0, 0, 0, severity, code, message, tuple(hints), tuple(notes))
        return cls(
            file, span.line, span.col, span.end_line, span.end_col, severity, code, message,
            tuple(hints), tuple(notes),
        )  # fmt: skip

    def sort_key(self) -> tuple[str, int, int, str, str]:
        return (self.file, self.line, self.col, self.code, self.message)


class DiagnosticError(Exception):
    """Raised by `parse` when the text is not a valid program; never escapes `loader.load`."""

    def __init__(self, diagnostics: list[Diagnostic], complete: bool = True) -> None:
        super().__init__("\n".join(d.message for d in diagnostics))
        self.diagnostics = diagnostics
        self.complete = complete  # False: the parser stopped before the end of the file


def closest(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate a misspelled name most likely meant, or None when none is close."""
    pool = sorted(set(candidates))
    matches = difflib.get_close_matches(word, pool, n=1, cutoff=0.6)
    if not matches:
        # Case slips ("order" for "Order") score low with difflib on short words.
        matches = [c for c in pool if c.lower() == word.lower()][:1]
    return matches[0] if matches else None


def did_you_mean(word: str, candidates: Iterable[str]) -> tuple[str, ...]:
    """A did-you-mean hint for a misspelled name, or nothing when no candidate is close."""
    match = closest(word, candidates)
    return () if match is None else (f"did you mean '{match}'?",)


_LINE_END = re.compile(r"\r\n|\r|\n")


# Bidirectional controls reorder how a terminal (or a graph) shows the text around them: the
# "Trojan Source" trick makes code read differently from what it is. They are shown as their
# code point instead.
BIDI_CONTROLS = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def escape_bidi(text: str) -> str:
    """`text` with every bidirectional control written as its code point, `<U+202E>`."""
    return BIDI_CONTROLS.sub(lambda m: f"<U+{ord(m.group(0)):04X}>", text)


def _display(line: str, start: int, end: int) -> tuple[str, int, int]:
    """The line as shown, and where the characters `start` and `end` are in it.

    Every character stays one cell wide, so columns still line up: tabs and control characters
    become single spaces rather than being expanded or printed raw. Bidirectional controls
    become their code point, and the positions after one shift accordingly.
    """
    shown = "".join(" " if (c < " " or c == "\x7f") else c for c in line)
    if BIDI_CONTROLS.search(shown) is None:
        return shown, start, end
    starts = [0]  # where each character of `line` begins in the shown text
    pieces = []
    for c in shown:
        piece = escape_bidi(c)
        pieces.append(piece)
        starts.append(starts[-1] + len(piece))
    def at(i: int) -> int:  # a span may end past the line's last character
        return starts[min(i, len(line))] + max(i - len(line), 0)

    return "".join(pieces), at(start), at(end)


def render_one(diagnostic: Diagnostic, sources: Mapping[str, str]) -> str:
    d = diagnostic
    label = f"{d.severity}[{d.code}]" if d.code else d.severity
    message, hints = escape_bidi(d.message), [escape_bidi(h) for h in d.hints]
    notes = [
        render_one(Diagnostic(*n[:5], "note", "", n.message), sources) for n in d.notes
    ]
    if d.line <= 0:
        head = f"{d.file}: {label}: {message}"
        return "\n".join([head, *(f"hint: {h}" for h in hints), *notes])
    out = [f"{d.file}:{d.line}:{d.col}: {label}: {message}"]
    text = sources.get(d.file)
    if text is not None:
        lines = _LINE_END.split(text)  # as the parser counts lines
        if d.line <= len(lines):
            raw = lines[d.line - 1]
            start = max(d.col - 1, 0)
            if d.end_line == d.line and d.end_col > d.col:
                end = d.end_col - 1
            elif d.end_line > d.line:
                end = len(raw)  # a multi-line span: caret to end of line
            else:
                end = start + 1  # an empty span, such as the end of the file
            line, start, end = _display(raw, start, end)
            if len(line) > 200:
                # Keep a very long line readable: show a window around the span.
                lo = max(0, start - 60)
                shown = line[lo : lo + 160]
                start, end = start - lo, end - lo
            else:
                shown = line
            width = max(min(end - start, len(shown) - start), 1)
            out.append(f"    | {shown.rstrip()}")
            out.append("    | " + " " * start + "^" * width)
    out.extend(f"hint: {h}" for h in hints)
    out.extend(notes)
    return "\n".join(out)


def render(diagnostics: Sequence[Diagnostic], sources: Mapping[str, str]) -> str:
    """Every diagnostic in the given order, each ending with a newline ("" for none)."""
    return "".join(render_one(d, sources) + "\n" for d in diagnostics)
