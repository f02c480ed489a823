"""The rules of the stateless pipeline operations (docs/language.md, "Operations").

One `op_*` function per operation (process, group_by, take, enumerate, through, echo, to, items,
events, filter, sink, where), each called by the checker's walk over an agent's pipeline with
the stream as it stands; they update the stream in place and return the IR operation, or None
after an error. Aggregates, windows and joins have their own modules (check_state, check_time,
check_join).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import ast, ir
from .check_common import KEY_TYPES, _accepts, _collapse, _HookInfo, _n, _show, _Stream, _TopicInfo
from .diagnostics import Span, closest, did_you_mean

if TYPE_CHECKING:
    from .checker import _Checker

def op_process(
    c: _Checker, op: ast.ProcessOp, s: _Stream, agent: ast.AgentDecl
) -> ir.Op | None:
    for ref in op.hooks:
        hook = c.find_hook(ref)
        if hook is None:
            s.elem = None
            continue
        c.check_hook_call(hook, ref, s.elem, "processor")
        if not hook.has_return:
            c.error(
                ref.span,
                "E308",
                f"hook '{ref.text}' returns nothing, so it cannot be a processor",
                ["a processor returns the new element, such as `-> Order`"],
            )
            s.elem = None
        else:
            s.elem = hook.returns
    if s.elem is None or s.key is None:
        s.elem = None
        return None
    return ir.Process(tuple(r.text for r in op.hooks), s.elem, s.key)


def op_group_by(
    c: _Checker, op: ast.GroupByOp, s: _Stream, agent: ast.AgentDecl
) -> ir.Op | None:
    first = op.path[0]
    elem = s.elem
    field_names = set(c.record_fields.get(elem.name, {})) \
        if isinstance(elem, ir.RecordType) else set()  # fmt: skip
    key: ir.Type | None
    hook_name: str | None = None
    path: tuple[str, ...] | None = None
    if (
        len(op.path) == 1
        and first.text in c.hooks
        and first.text not in field_names
    ):
        hook = c.hooks[first.text]
        c.resolved(first.span, "hook", first.text)
        c.check_hook_call(hook, first, elem, "key function")
        key = hook.returns
        if not hook.has_return:
            c.error(
                first.span,
                "E308",
                f"hook '{first.text}' returns nothing, so it cannot be a key "
                "function",
                ["a key function returns the key, such as `-> str`"],
            )
        hook_name = first.text
        key_span = first.span
    else:
        if elem is None:
            return c.lose(s)
        if not isinstance(elem, ir.RecordType):
            if len(op.path) == 1:
                c.error(
                    first.span,
                    "E204",
                    f"unknown hook '{first.text}' (a stream of {elem} has no "
                    "fields to group by)",
                    did_you_mean(first.text, c.hooks),
                )
            else:
                c.error(first.span, "E309",
                           f"cannot group a stream of {elem} by a field: only records "
                           "have fields")  # fmt: skip
            return c.lose(s)
        if (
            len(op.path) == 1
            and first.text not in field_names
            and (elem.name, first.text) not in c.broken_fields
        ):
            # One name may be a field or a hook: say so, and suggest the nearest of both.
            fields = c.record_fields.get(elem.name, {})
            near = closest(first.text, [*fields, *c.hooks])
            kind = "the field " if near in fields else "the hook "
            what = "field or hook" if c.hooks else "field"
            c.error(first.span, "E201",
                       f"record {elem.name} has no {what} '{first.text}'",
                       [f"did you mean {kind if c.hooks else ''}'{near}'?"]
                       if near else [])  # fmt: skip
            key = None
        else:
            key = c.resolve_path(op.path, elem)
        path = c.share(tuple(n.text for n in op.path))
        key_span = op.path[0].span.to(op.path[-1].span)
    if key is not None and (
        isinstance(key, ir.OptionalType) or key not in KEY_TYPES
    ):
        what = f"'{'.'.join(path)}'" if path else f"hook '{hook_name}'"
        hints = ["keys are str, int or bytes, and never null"]
        if isinstance(key, ir.OptionalType):
            hints.insert(0, f"{what} may be null")
        c.error(
            key_span,
            "E303",
            f"cannot group by {what}: {key} is not a valid key",
            hints,
        )
        key = None
    if key is None or s.elem is None:
        s.key = (
            None  # the element type is still known: later operations can be checked
        )
        return None
    key_text = ".".join(path) if path else str(hook_name)
    name = f"{c.app}-{agent.name.text}-{s.topic}-{key_text}-repartition"
    topic = ir.Topic(name, name, key, s.elem, s.partitions, "repartition")
    if name in c.kafka_names:
        c.error(
            op.span,
            "E208",
            f"Kafka topic '{name}' is already used by {c.owner_of(name)}",
            notes=c.first_here(c.kafka_spans.get(name), f"Kafka topic '{name}'", "used"),
        )
    elif c.check_kafka_name(
        name,
        op.span,
        f"the repartition topic of agent {agent.name.text}",
        "it is named <app>-<agent>-<source topic>-<key>-repartition: shorten those "
        "names, or send the stream `through` a shorter topic before a second group_by",
    ):
        c.kafka_names[name] = ("the repartition topic of agent ", agent.name.text)
        c.kafka_spans[name] = op.span
        c.repartition[name] = _TopicInfo(topic, None)
    s.key, s.topic, s.inputs = key, name, (s.partitions,)
    return ir.GroupBy(path, hook_name, name, s.elem, key)


def lose(c: _Checker, s: _Stream) -> ir.Op | None:
    """After an error that leaves the stream's type unknown."""
    s.elem = None
    return None


def op_take(c: _Checker, op: ast.TakeOp, s: _Stream, agent: ast.AgentDecl) -> ir.Op | None:
    if op.size.value < 1:
        c.error(
            op.size.span,
            "E306",
            f"take needs a positive batch size, found {op.size.value}",
        )
    within = None
    if op.within is not None:
        within = op.within.seconds
        if within <= 0:
            c.error(
                op.within.span,
                "E306",
                f"take needs a positive duration, found {op.within.text}",
            )
    if s.elem is None:
        return None
    s.elem = c.share(ir.ListType(s.elem))
    if s.key is None:
        return None
    return ir.Take(op.size.value, within, s.elem, s.key)


def op_enumerate(
    c: _Checker, op: ast.EnumerateOp, s: _Stream, agent: ast.AgentDecl
) -> ir.Op | None:
    if s.elem is None:
        return None
    s.elem = c.share(ir.TupleType((ir.INT, s.elem)))
    if s.key is None:
        return None
    return ir.Enumerate(op.start.value if op.start else 0, s.elem, s.key)


def declared_by_kafka_name(c: _Checker) -> dict[str, _TopicInfo]:
    """The first declared topic of each Kafka name, indexed once all topics are checked:
    a scan per `to "name"` made checking 100,000 agents quadratic."""
    if c.by_kafka_name is None:
        c.by_kafka_name = {}
        for info in c.topics.values():
            c.by_kafka_name.setdefault(info.topic.kafka_name, info)
    return c.by_kafka_name


def target(c: _Checker, ref: ast.TopicRef, s: _Stream, word: str) -> ir.Topic | None:
    """Resolve the topic of through/echo/to and check it accepts the stream."""
    if isinstance(ref, ast.Name):
        info = c.find_topic(ref)
        if info is None:
            return None
    else:
        declared = c.declared_by_kafka_name().get(ref.value)
        if declared is not None:
            info = declared
        elif ref.value in c.implicit:
            info = c.implicit[ref.value]
        else:
            if not c.check_kafka_name(ref.value, ref.span):
                return None
            if s.elem is None or s.key is None:
                return None  # its types would be guesses; any error is reported already
            if not c.storable(s.elem, ref.span, word):
                return None
            if ref.value in c.kafka_names:
                c.error(ref.span, "E208", f"Kafka topic '{ref.value}' is already used "
                           f"by {c.owner_of(ref.value)}",
                           notes=c.first_here(c.kafka_spans.get(ref.value),
                                                 f"Kafka topic '{ref.value}'", "used"),
                           )  # fmt: skip
                return None
            c.kafka_names[ref.value] = f'the topic "{ref.value}"'
            c.kafka_spans[ref.value] = ref.span
            topic = ir.Topic(
                ref.value, ref.value, s.key, s.elem, s.partitions, "implicit"
            )
            info = _TopicInfo(topic, ref.span, first_use=c.line_of(ref.span))
            c.implicit[ref.value] = info
            return topic
    t = info.topic
    if s.elem is None or info.first_use == "broken":
        return t
    if not c.storable(s.elem, ref.span, word):
        return None
    label = f"topic {t.name}" if t.kind == "declared" else \
        f"topic \"{t.name}\" (first used at {info.first_use})"  # fmt: skip
    if t.value_type != s.elem:
        c.error(
            ref.span,
            "E301",
            f"{label} carries {t.value_type}, but the stream carries {s.elem}",
            [f"expected {t.value_type}, found {s.elem}"],
        )
        return None
    if s.key is not None and t.key_type != s.key:
        c.error(
            ref.span,
            "E301",
            f"{label} is keyed by {t.key_type}, but the stream is keyed by {s.key}",
            [f"expected key {t.key_type}, found {s.key}"],
        )
        return None
    return t


def storable(c: _Checker, t: ir.Type, span: Span, word: str) -> bool:
    if isinstance(t, ir.TupleType | ir.EventType | ir.AnyType):
        c.error(span, "E314", f"'{word}' cannot send a stream of {t} to a topic",
                   ["topics carry records, primitives and lists; send before "
                    "enumerate"])  # fmt: skip
        return False
    return True


def op_through(
    c: _Checker, op: ast.ThroughOp, s: _Stream, agent: ast.AgentDecl
) -> ir.Op | None:
    topic = c.target(op.topic, s, "through")
    if topic is None or s.elem is None or s.key is None:
        return None
    s.topic, s.partitions, s.inputs = topic.name, topic.partitions, (topic.partitions,)
    return ir.Through(topic.name, s.elem, s.key)


def op_echo(c: _Checker, op: ast.EchoOp, s: _Stream, agent: ast.AgentDecl) -> ir.Op | None:
    names: list[str] = []
    for ref in op.topics:
        topic = c.target(ref, s, "echo")
        if topic is not None:
            if topic.name in names:
                c.error(
                    ref.span, "E207", f"echo names topic '{topic.name}' twice"
                )
            names.append(topic.name)
    if s.elem is None or s.key is None or len(names) != len(op.topics):
        return None
    return ir.Echo(tuple(names), s.elem, s.key)


def op_to(c: _Checker, op: ast.ToOp, s: _Stream, agent: ast.AgentDecl) -> ir.Op | None:
    topic = c.target(op.topic, s, "to")
    s.mode, s.mode_op = "done", "to"
    if topic is None or s.elem is None or s.key is None:
        return None
    return ir.To(topic.name, s.elem, s.key)


def op_items(
    c: _Checker, op: ast.ItemsOp, s: _Stream, agent: ast.AgentDecl
) -> ir.Op | None:
    s.mode = s.mode_op = "items"
    if s.elem is None or s.key is None:
        return None
    s.elem = c.share(ir.TupleType((s.key, s.elem)))
    return ir.Items(s.elem, s.key)


def op_events(
    c: _Checker, op: ast.EventsOp, s: _Stream, agent: ast.AgentDecl
) -> ir.Op | None:
    s.mode = s.mode_op = "events"
    if s.elem is None or s.key is None:
        return None
    s.elem = c.share(ir.EventType(s.key, s.elem))
    return ir.Events(s.elem, s.key)


def op_filter(
    c: _Checker, op: ast.FilterOp, s: _Stream, agent: ast.AgentDecl
) -> ir.Op | None:
    hook = c.find_hook(op.hook)
    if hook is None:
        return None
    c.check_hook_call(hook, op.hook, s.elem, "filter")
    if hook.returns != ir.BOOL:
        found = hook.returns if hook.has_return else "nothing"
        c.error(
            op.hook.span,
            "E308",
            f"filter hook '{op.hook.text}' must return bool",
            [f"expected bool, found {found}"],
        )
    if s.elem is None or s.key is None:
        return None
    return ir.Filter(op.hook.text, s.elem, s.key)


def op_sink(c: _Checker, op: ast.SinkOp, s: _Stream, agent: ast.AgentDecl) -> ir.Op | None:
    s.mode, s.mode_op = "done", "sink"
    hook = c.find_hook(op.hook)
    if hook is None:
        return None
    unpack = c.check_hook_call(hook, op.hook, s.elem, "sink")
    if hook.has_return:
        c.error(op.hook.span, "E308",
                   f"sink hook '{op.hook.text}' returns {_show(hook.returns)}; a sink "
                   "returns nothing", ["drop the `-> ...` from its declaration, or use it "
                                       "in `process`"])  # fmt: skip
    if s.elem is None or s.key is None:
        return None
    return ir.Sink(op.hook.text, unpack, s.elem, s.key)


def op_where(
    c: _Checker, op: ast.WhereOp, s: _Stream, agent: ast.AgentDecl
) -> ir.Op | None:
    if s.elem is None:
        return None
    if not isinstance(s.elem, ir.RecordType) and not s.joined:
        c.error(
            op.span,
            "E309",
            f"where needs a stream of records, but the stream carries {s.elem}",
            ["use `filter` with a hook for other elements"],
        )
        return None
    text = c.share(_collapse(c.module.text[op.expr.span.start : op.expr.span.end]))
    # The same condition (the same words) on the same record checks to the same result:
    # generated programs repeat conditions over thousands of agents.
    typed = c.checked_where.get((text, s.elem, s.names))
    if typed is None:
        errors = len(c.diagnostics)
        typed = c.check_expr(op.expr, c.scope(s))
        if typed is None or s.key is None:
            return None
        if typed.type != ir.BOOL:
            c.error(
                op.expr.span,
                "E311",
                f"the condition of where must be a bool, found {typed.type}",
            )
            return None
        if len(c.diagnostics) == errors:
            c.checked_where[text, s.elem, s.names] = typed
    if s.key is None:
        return None
    return ir.Where(typed, text, s.elem, s.key, s.names)


# ---- hook calls

def check_hook_call(c: _Checker, hook: _HookInfo, ref: ast.Name, elem: ir.Type | None,
                    role: str) -> bool:  # fmt: skip
    """Check a hook accepts the element; returns whether a sink unpacks a tuple."""
    name = ref.text
    params = hook.params
    if elem is None or any(p is None for p in params):
        return isinstance(elem, ir.TupleType) and len(params) == len(elem.items) > 1
    declared = "(" + ", ".join(str(p) for p in params) + ")"
    if role == "sink" and isinstance(elem, ir.TupleType) and len(params) == len(elem.items) \
            and len(params) > 1:  # fmt: skip
        for i, (p, actual) in enumerate(zip(params, elem.items, strict=True)):
            assert p is not None
            if not _accepts(p, actual):
                c.error(ref.span, "E307",
                           f"hook '{name}' takes {p} as parameter {i + 1}, but the "
                           f"stream's elements carry {actual} there",
                           [f"expected {declared}, found {elem}"])  # fmt: skip
                break
        return True
    if len(params) != 1:
        hints = [f"the stream carries {elem}"]
        if isinstance(elem, ir.TupleType) and role != "sink":
            hints.append(f"only a sink unpacks a tuple; declare '{name}' with one "
                         f"parameter of type {elem}")  # fmt: skip
        c.error(ref.span, "E307",
                   f"hook '{name}' takes {_n(len(params), 'parameter')} {declared}, but a "
                   f"{role} is called with one element", hints)  # fmt: skip
        return False
    p = params[0]
    assert p is not None
    if not _accepts(p, elem):
        c.error(
            ref.span,
            "E307",
            f"hook '{name}' takes {p}, but the stream carries {elem}",
            [f"expected {p}, found {elem}"],
        )
    return False
