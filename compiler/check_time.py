"""The rules of time (docs/language.md, "Time, windows and distinct").

`check_timestamp` checks a topic's `timestamp FIELD`; `check_window` the window options of an
`aggregate`; `op_distinct` and `op_window` the operations. Like check_state, they work on the
checker's state (`checker._Checker`): every problem is reported and the walk carries on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import ast, ir
from .check_common import KEY_TYPES, _collapse
from .diagnostics import Span, did_you_mean

if TYPE_CHECKING:
    from .check_common import _Stream
    from .checker import _Checker

WINDOW_BOUNDS = ("start", "end")
_WORDS = {ast.WindowKind: "window", ast.WindowGrace: "grace", ast.WindowEmit: "emit",
          ast.WindowLate: "late to"}  # fmt: skip


def is_time(t: ir.Type | None) -> bool:
    return t == ir.TIME or t == ir.OptionalType(ir.TIME)


def check_timestamp(c: _Checker, topic: str, opt: ast.TopicTimestamp,
                    value_type: ir.Type | None) -> str | None:  # fmt: skip
    """The field named by `timestamp FIELD` on a topic carrying `value_type`, if it is one."""
    name = opt.field.text
    if value_type is None:
        return None
    if not isinstance(value_type, ir.RecordType):
        c.error(opt.span, "E323", f"topic {topic} carries {value_type}, which has no field "
                f"'{name}' to take the event time from",
                ["without `timestamp`, the event time is the Kafka message timestamp"])  # fmt: skip
        return None
    fields = c.record_fields.get(value_type.name, {})
    found = fields.get(name)
    if found is None:
        if (value_type.name, name) not in c.broken_fields:
            c.error(opt.field.span, "E201", f"record {value_type.name} has no field '{name}'",
                    did_you_mean(name, fields))  # fmt: skip
        return None
    if not is_time(found.type):
        c.error(opt.field.span, "E323", f"the event time of topic {topic} must be a time, but "
                f"field '{name}' is {found.type}",
                [f"declare it as `{name}: time` (RFC 3339 text or epoch milliseconds), or "
                 "drop `timestamp` to use the Kafka message timestamp"])  # fmt: skip
        return None
    return name


def duration_ms(c: _Checker, d: ast.Duration, what: str, zero: bool = False) -> int | None:
    """A duration in whole milliseconds, positive (or zero when `zero`); None when not."""
    ms = d.seconds * 1000
    if ms < 0 or (ms == 0 and not zero):
        c.error(d.span, "E306", f"{what} must be positive, found {d.text}")
        return None
    if ms != int(ms):
        c.error(d.span, "E306", f"{what} must be a whole number of milliseconds, found {d.text}")
        return None
    return int(ms)


def check_window(c: _Checker, op: ast.AggregateOp,
                 s: _Stream) -> tuple[ir.Window | None, ir.EmitMode, str | None, bool]:  # fmt: skip
    """The window, emit mode and late topic of an aggregate, and whether they are sound."""
    seen: dict[type, Span] = {}
    kind: ast.WindowKind | None = None
    grace: ast.WindowGrace | None = None
    emit: ir.EmitMode = "updates"
    late: str | None = None
    ok = True
    for opt in op.options:
        word = _WORDS[type(opt)]
        if type(opt) in seen:
            c.error(opt.span, "E207", f"aggregate {op.table.text} gives '{word}' twice",
                    notes=c.first_here(seen[type(opt)], f"'{word}'", "given"))  # fmt: skip
            ok = False
            continue
        seen[type(opt)] = opt.span
        if isinstance(opt, ast.WindowKind):
            kind = opt
        elif isinstance(opt, ast.WindowGrace):
            grace = opt
        elif isinstance(opt, ast.WindowEmit):
            emit = "final" if opt.mode == "final" else "updates"
        else:
            topic = c.target(opt.topic, s, "late to")
            if topic is None:
                ok = False
            else:
                late = topic.name
    if kind is None:
        for opt in op.options:
            if not isinstance(opt, ast.WindowKind) and opt.span == seen.get(type(opt)):
                c.error(opt.span, "E320", f"'{_WORDS[type(opt)]}' needs a window, but aggregate "
                        f"{op.table.text} has none",
                        [f"give the window first: `aggregate {op.table.text} window tumbling "
                         f"1m {c.module.text[opt.span.start:opt.span.end]} {{ ... }}`"],
                        )  # fmt: skip
                ok = False
        return None, emit, late, ok
    size = duration_ms(c, kind.size, "a session gap" if kind.kind == "session" else
                       "a window size")  # fmt: skip
    advance: int | None = None
    if kind.every is not None:
        advance = duration_ms(c, kind.every, "a window advance")
        if size is not None and advance is not None and (advance >= size or size % advance):
            c.error(kind.every.span, "E322", f"a hopping window of {kind.size.text} cannot "
                    f"advance by {kind.every.text}",
                    ["the advance is smaller than the size and divides it, such as "
                     "`window hopping 5m every 1m`; for windows that do not overlap, use "
                     "`window tumbling`"])  # fmt: skip
            advance = None
    grace_ms = 0 if grace is None else duration_ms(c, grace.duration, "a grace period", zero=True)
    if size is None or grace_ms is None or (kind.every is not None and advance is None):
        return None, emit, late, False
    end = (grace or kind).span.end
    text = " ".join(c.module.text[kind.span.start + len("window"):end].split())
    window = ir.Window(kind.kind, size, advance, grace_ms, text)  # type: ignore[arg-type]
    return window, emit, late, ok


def op_window(c: _Checker, op: ast.WindowOp, s: _Stream, agent: ast.AgentDecl) -> ir.Op | None:
    """Window options written as an operation: they belong to an aggregate."""
    words = " ".join(c.module.text[op.span.start : op.span.end].split())
    c.error(op.span, "E320", f"'{_WORDS[type(op.options[0])]}' is not an operation: windows "
            "belong to an aggregate",
            [f"write them after the table's name: `| aggregate TABLE {words} {{ ... }}`"],
            )  # fmt: skip
    return None


def op_distinct(c: _Checker, op: ast.DistinctOp, s: _Stream,
                agent: ast.AgentDecl) -> ir.Op | None:  # fmt: skip

    within = duration_ms(c, op.within, "the `within` of distinct")
    path: tuple[str, ...] | None = None
    if op.path:
        if s.elem is None:
            return None
        if not isinstance(s.elem, ir.RecordType):
            c.error(op.path[0].span, "E309", f"cannot tell elements apart by a field: the "
                    f"stream carries {s.elem}, and only records have fields",
                    ["write `distinct within ...` to tell them apart by their key"])  # fmt: skip
            return None
        t = c.resolve_path(op.path, s.elem)
        if t is None:
            return None
        path = tuple(n.text for n in op.path)
        if t not in (*KEY_TYPES, ir.TIME):
            shown = ".".join(path)
            span = op.path[0].span.to(op.path[-1].span)
            c.error(span, "E303", f"cannot tell elements apart by '{shown}': {t} is not a "
                    "valid key", [f"'{shown}' may be null"] if isinstance(t, ir.OptionalType)
                    else ["distinct compares str, int, bytes or time values"])  # fmt: skip
            return None
    index = sum(1 for o in agent.ops[: agent.ops.index(op) + 1] if isinstance(o, ast.DistinctOp))
    changelog = f"{c.app}-{agent.name.text}-distinct-{index}-changelog"
    if c.check_kafka_name(changelog, op.span, f"the changelog of a distinct of agent "
                          f"{agent.name.text}", "shorten the app or agent name"):  # fmt: skip
        c.claim_kafka_name(changelog, f"the changelog of a distinct of agent {agent.name.text}",
                           op.span)  # fmt: skip
    if within is None or s.elem is None or s.key is None:
        return None
    text = _collapse(c.module.text[op.span.start : op.span.end])
    return ir.Distinct(path, within, text, s.elem, s.key)


def window_value(c: _Checker, f: ast.AggField, value: ast.AggWindow,
                 window: ir.Window | None, field_type: ir.Type | None,
                 table: str) -> ir.Accumulate | None:  # fmt: skip
    """`window.start` or `window.end` in a windowed aggregate: a time."""
    bound = value.bound.text
    if bound not in WINDOW_BOUNDS:
        c.error(value.bound.span, "E201", f"a window has no field '{bound}'",
                did_you_mean(bound, WINDOW_BOUNDS) or ["a window has a start and an end"])
        return None
    if window is None:
        c.error(value.span, "E321", f"window.{bound} is only known in a windowed aggregate, but "
                f"aggregate {table} has no window",
                [f"give it a window: `aggregate {table} window tumbling 1m {{ ... }}`"],
                )  # fmt: skip
        return None
    if field_type is None:
        return None
    from .check_state import _fits, _misfit

    if not _fits(ir.TIME, field_type):
        _misfit(c, value.span, f.name.text, f"window.{bound}", ir.TIME, field_type)
        return None
    kind: ir.AggKind = "window_start" if bound == "start" else "window_end"
    return ir.Accumulate(f.name.text, kind, None, None, None, ir.TIME, field_type)
