"""The rules of `select` and joins (docs/language.md, "Joins and select").

`check_table` checks a `table` declaration (a table over a topic here, the rest in
check_state); `op_join` a `[left] join TABLE as NAME on key|FIELD` step and `op_select` a
`select R { field = EXPR, ... }` step where the checker's pipeline walk meets them. Like
check_state and check_time, they work on the checker's state (`checker._Checker`): every
problem is reported and the walk carries on.

Co-partitioning: a join looks a row up in the table partition of the element's own partition,
so a non-global table joined `on key` needs the stream's partition count and key type; joined
`on FIELD` it would need a repartition by FIELD first, which the checker asks for (E329 with
the `group_by` to write) rather than inserts: the extra topic and hop stay visible in the
source. A global table holds every partition on every worker and needs neither.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from . import ast, check_state, ir
from .check_common import _collapse, _is_null
from .diagnostics import Span, did_you_mean

if TYPE_CHECKING:
    from .check_common import _Stream
    from .checker import _Checker


def check_table(c: _Checker, decl: ast.TableDecl) -> None:
    sources = [o for o in decl.options if isinstance(o, ast.TableSource)]
    globals_ = [o for o in decl.options if isinstance(o, ast.TableGlobal)]
    plain = tuple(o for o in decl.options if isinstance(o, ast.TopicKey | ast.TopicPartitions))
    check_state.check_table(c, dataclasses.replace(decl, options=plain))
    name = decl.name.text
    extras: list[ast.TableSource | ast.TableGlobal] = [*sources[1:], *globals_[1:]]
    for extra in extras:
        word = "from" if isinstance(extra, ast.TableSource) else "global"
        c.error(extra.span, "E207", f"table {name} gives '{word}' twice")
    info = c.tables.get(name)
    if info is None or info.span != decl.name.span:
        return  # a duplicate name, already reported
    if globals_ and not sources:
        c.error(globals_[0].span, "E328", f"table {name} is global, but only a table over a "
                "topic can be", [f"name its topic: `table {name}: ... from TOPIC global`"])
    if not sources:
        return
    src = sources[0]
    topic_info = c.find_topic(src.topic)
    if topic_info is None:
        return
    topic = topic_info.topic
    info.source = topic.name
    counts = [o for o in plain if isinstance(o, ast.TopicPartitions)]
    if counts:
        c.error(counts[0].span, "E328", f"table {name} has the partitions of topic "
                f"{topic.name} ({topic.partitions})", ["leave `partitions` out"])  # fmt: skip
    if info.key is None or info.record is None or topic_info.first_use == "broken":
        return
    if (topic.key_type, topic.value_type) != (info.key, info.record):
        c.error(src.span, "E328", f"table {name} holds {info.record} keyed by {info.key}, but "
                f"topic {topic.name} carries {topic.value_type} keyed by {topic.key_type}",
                ["a table over a topic has the topic's key and value types"])  # fmt: skip
        return
    info.table = ir.Table(name, info.key, info.record, topic.partitions, topic.kafka_name,
                          source=topic.name, global_=bool(globals_))  # fmt: skip


def op_join(c: _Checker, op: ast.JoinOp, s: _Stream, agent: ast.AgentDecl) -> ir.Op | None:
    ref = op.table
    info = c.tables.get(ref.text)
    if info is None:
        hints = list(did_you_mean(ref.text, c.tables))
        if ref.text in c.topics:
            hints.append(f"'{ref.text}' is a topic; a join reads a table, such as "
                         f"`table {ref.text}_by_key: Record key str from {ref.text}`")
        c.error(ref.span, "E213", f"unknown table '{ref.text}'", hints)
    elem, name = s.elem, op.name.text
    if elem is not None and not isinstance(elem, ir.RecordType):
        hint = ("`select` the fields you need into a record first, then join again"
                if s.joined else "join before `take`, `enumerate` or `items`")
        c.error(op.span, "E309", f"join needs a stream of records, but the stream carries "
                f"{elem}", [hint])  # fmt: skip
        elem = None
    if name in s.names:
        c.error(op.name.span, "E207", f"the name '{name}' is already the element's")
        elem = None
    field: tuple[str, ...] | None = None
    if info is not None and elem is not None:
        table_key = info.key
        glob = info.table is not None and info.table.global_
        if op.on:
            field = tuple(n.text for n in op.on)
            shown = ".".join(field)
            t = c.resolve_path(op.on, elem)
            span = op.on[0].span.to(op.on[-1].span)
            if t is not None and table_key is not None and t != table_key:
                hints = [f"'{shown}' may be null: a null never finds a row; `where {shown} != "
                         f"null` does not narrow it here"] if isinstance(t, ir.OptionalType) \
                    else [f"join on a field of type {table_key}"]  # fmt: skip
                c.error(span, "E330", f"table {ref.text} is keyed by {table_key}, but "
                        f"'{shown}' is {t}", hints)  # fmt: skip
            elif t is not None and not glob:
                c.error(span, "E329", f"table {ref.text} is partitioned by its key, so a join "
                        f"on '{shown}' would look in the wrong partition",
                        [f"re-key the stream first: `| group_by {shown} | join {ref.text} as "
                         f"{name} on key` (its stream needs the table's partition count), or "
                         "declare the table `global`"])  # fmt: skip
        else:
            if table_key is not None and s.key is not None and s.key != table_key:
                c.error(op.span, "E330", f"table {ref.text} is keyed by {table_key}, but the "
                        f"stream is keyed by {s.key}",
                        [f"join on a field of type {table_key}, or `group_by` one first"])
            partitions = info.table.partitions if info.table is not None else info.partitions
            if not glob and partitions is not None and any(
                n != partitions for n in (*s.inputs, s.partitions)
            ):
                # Every merged topic looks rows up partition by partition, not only the largest.
                counts = sorted({*s.inputs, s.partitions})
                has = f"has {counts[0]}" if len(counts) == 1 else \
                    f"reads topics of {' and '.join(map(str, counts))} partitions"  # fmt: skip
                c.error(op.span, "E329", f"table {ref.text} has {partitions} partitions, but "
                        f"the stream it is joined with {has}",
                        ["a row is looked up in the table partition of the element's own "
                         "partition: give both as many partitions, or declare the table "
                         "`global`"])  # fmt: skip
    s.names = (s.names[0] if s.names else None, name)
    s.joined = True
    if info is None or info.record is None or elem is None:
        s.elem = None
        return None
    row: ir.Type = ir.OptionalType(info.record) if op.left else info.record
    s.elem = ir.TupleType((elem, row))
    if s.key is None:
        return None
    return ir.Join(ref.text, field, op.left, s.names, s.elem, s.key)


def op_join_stream(c: _Checker, op: ast.JoinStreamOp, s: _Stream,
                   agent: ast.AgentDecl) -> ir.Op | None:  # fmt: skip
    """`[left|outer] join stream TOPIC as NAME within D [grace D] [late to T]`: both sides
    are buffered per partition and matched by key, so the topics must be co-partitioned."""
    from . import check_time

    ref = op.topic
    topic: ir.Topic | None = None
    if isinstance(ref, ast.StrLit):
        c.error(ref.span, "E203", f"a stream join reads a declared topic, not \"{ref.value}\"",
                [f"declare it: `topic {ref.value}: Record key str partitions N`"])  # fmt: skip
    else:
        info = c.find_topic(ref)
        if info is not None and info.first_use != "broken":
            topic = info.topic
    elem, name = s.elem, op.name.text
    if elem is not None and not isinstance(elem, ir.RecordType):
        hint = ("`select` the fields you need into a record first, then join again"
                if s.joined else "join before `take`, `enumerate` or `items`")
        c.error(op.span, "E309", f"join needs a stream of records, but the stream carries "
                f"{elem}", [hint])  # fmt: skip
        elem = None
    if name in s.names:
        c.error(op.name.span, "E207", f"the name '{name}' is already the element's")
        elem = None
    if topic is not None and elem is not None:
        if s.key is not None and topic.key_type != s.key:
            c.error(ref.span, "E331", f"topic {topic.name} is keyed by {topic.key_type}, but "
                    f"the stream joined with it is keyed by {s.key}",
                    ["a stream join matches equal keys: `group_by` a field of type "
                     f"{topic.key_type} first, or join a topic keyed like the stream"])  # fmt: skip
        elif any(n != topic.partitions for n in (*s.inputs, s.partitions)):
            # Every merged topic is joined partition by partition, not only the largest.
            counts = sorted({*s.inputs, s.partitions})
            has = f"has {counts[0]}" if len(counts) == 1 else \
                f"reads topics of {' and '.join(map(str, counts))} partitions"  # fmt: skip
            c.error(ref.span, "E331", f"topic {topic.name} has {topic.partitions} partitions, "
                    f"but the stream joined with it {has}",
                    ["both sides of a stream join are buffered per partition, so an element "
                     "only meets the other topic's records of its own partition: give both as "
                     "many partitions"])  # fmt: skip
    within = check_time.duration_ms(c, op.within, "the `within` of a stream join", zero=True)
    grace = 0 if op.grace is None else check_time.duration_ms(
        c, op.grace.duration, "a grace period", zero=True)  # fmt: skip
    late: str | None = None
    if op.late is not None:
        target = c.target(op.late.topic, s, "late to")
        late = None if target is None else target.name
    index = sum(1 for o in agent.ops[: agent.ops.index(op) + 1]
                if isinstance(o, ast.JoinStreamOp))  # fmt: skip
    changelog = f"{c.app}-{agent.name.text}-join-{index}-changelog"
    owner = f"the changelog of a stream join of agent {agent.name.text}"
    if c.check_kafka_name(changelog, op.span, owner, "shorten the app or agent name"):
        c.claim_kafka_name(changelog, owner, op.span)
    s.names = (s.names[0] if s.names else None, name)
    s.joined = True
    if topic is None or elem is None:
        s.elem = None
        return None
    this: ir.Type = ir.OptionalType(elem) if op.how == "outer" else elem
    other: ir.Type = topic.value_type if op.how == "inner" else ir.OptionalType(topic.value_type)
    s.elem = ir.TupleType((this, other))
    if s.key is None or within is None or grace is None or (op.late is not None and late is None):
        return None
    text = _collapse(c.module.text[op.span.start : op.span.end])
    return ir.JoinStream(topic.name, op.how, within, grace, late, text, s.names, elem, s.elem,
                         s.key)  # fmt: skip


def op_select(c: _Checker, op: ast.SelectOp, s: _Stream, agent: ast.AgentDecl) -> ir.Op | None:

    name = op.record.text
    if name not in c.records:
        c.error(op.record.span, "E202", f"unknown record '{name}'",
                did_you_mean(name, list(c.records)))  # fmt: skip
        s.elem = None
        return None
    c.resolved(op.record.span, "record", name)
    target = c.record_fields.get(name, {})
    elem, names = s.elem, s.names
    if elem is not None and not isinstance(elem, ir.RecordType) and not s.joined:
        c.error(op.span, "E309", f"select needs a stream of records, but the stream carries "
                f"{elem}", ["use `process` with a hook for other elements"])  # fmt: skip
        elem = None
    scope = None if elem is None else c.scope(s)
    given: dict[str, Span] = {}
    values: list[tuple[str, ir.Expr]] = []
    ok = True
    for f in op.fields:
        field = f.name.text
        if field in given:
            c.error(f.name.span, "E207", f"select gives field '{field}' twice",
                    notes=c.first_here(given[field], f"field '{field}'", "given"))  # fmt: skip
            ok = False
            continue
        given[field] = f.name.span
        declared = target.get(field)
        if declared is None and (name, field) not in c.broken_fields:
            c.error(f.name.span, "E201", f"record {name} has no field '{field}'",
                    did_you_mean(field, target))  # fmt: skip
        if declared is not None:
            c.resolved(f.name.span, "field", name, field)
        if scope is None:
            continue
        typed = c.check_expr(f.value, scope)
        if typed is None or declared is None:
            ok = False
            continue
        written = _collapse(c.module.text[f.value.span.start : f.value.span.end])
        if _is_null(typed):
            if not isinstance(declared.type, ir.OptionalType):
                c.error(f.value.span, "E327", f"field '{field}' of {name} is {declared.type}, "
                        "which cannot be null", [f"declare it as {declared.type}? in record "
                                                 f"{name}, or give it a value"])  # fmt: skip
                ok = False
                continue
            typed = ir.Const(None, declared.type)
        elif not _fits(typed.type, declared.type):
            if isinstance(typed.type, ir.OptionalType) and _fits(typed.type.inner,
                                                                   declared.type):  # fmt: skip
                hints = [f"declare the field as {declared.type}? in record {name}"]
                through = isinstance(typed, ir.FieldRef) and (
                    typed.root or len(typed.path) > 1 or (isinstance(elem, ir.TupleType)
                    and isinstance(elem.items[typed.root], ir.OptionalType)))  # fmt: skip
                if through:
                    hints.append("a path through an optional record (such as a left join's "
                                 "row, or a side of an outer stream join) is null when the "
                                 "record is")  # fmt: skip
                c.error(f.value.span, "E327", f"{written} may be null, but field '{field}' of "
                        f"{name} is {declared.type}", hints)  # fmt: skip
            else:
                c.error(f.value.span, "E326", f"{written} is {typed.type}, but field "
                        f"'{field}' of {name} is {declared.type}",
                        [f"expected {declared.type}, found {typed.type}"])  # fmt: skip
            ok = False
            continue
        values.append((field, typed))
    missing = [f.name for f in target.values()
               if f.name not in given and f.default is None
               and not isinstance(f.type, ir.OptionalType)]  # fmt: skip
    if missing:
        listed = ", ".join(f"'{m}'" for m in missing)
        c.error(op.record.span, "E325", f"select {name} leaves required "
                f"field{'s' if len(missing) > 1 else ''} {listed} unset",
                [f"give every field without a default a value: `{missing[0]} = ...`",
                 "optional fields (T?) and fields with a default may be left out"])  # fmt: skip
        ok = False
    s.elem, s.names, s.joined = ir.RecordType(name), (), False
    if not ok or elem is None or s.key is None:
        return None
    text = _collapse(c.module.text[op.span.start : op.span.end])
    return ir.Select(name, tuple(values), text, names, s.elem, s.key)


def _fits(value: ir.Type, field: ir.Type) -> bool:
    """Whether a value of type `value` may fill a field of type `field`: the same type, an int
    for a float, and anything that fits T for a T?."""
    if value == field or (value == ir.INT and field == ir.FLOAT):
        return True
    if isinstance(field, ir.OptionalType):
        inner = value.inner if isinstance(value, ir.OptionalType) else value
        return _fits(inner, field.inner)
    return False
