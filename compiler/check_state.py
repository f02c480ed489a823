"""The rules of tables and `aggregate` (docs/language.md, "Tables and aggregations").

`check_table` checks a `table` declaration; `op_aggregate` checks an `aggregate` step where the
checker's pipeline walk meets it; `unfilled_tables` warns about tables nothing fills. They work
on the checker's state (`checker._Checker`), as its own rules do: every problem is reported and
the walk carries on with a best guess.

The null rule: an optional expression's nulls are skipped by count(EXPR), sum, min, max and avg,
as SQL does; min, max and avg of an optional expression, and first and last of one, can be null
(no value seen yet, or a null value), so they need an optional field.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import ast, check_time, ir
from .check_common import KEY_TYPES, _accepts, _collapse
from .diagnostics import Diagnostic, Span, did_you_mean

if TYPE_CHECKING:
    from .check_common import _Stream
    from .checker import _Checker

# The aggregate functions and how many arguments each takes.
FUNCTIONS: dict[str, tuple[int, ...]] = {
    "count": (0, 1), "sum": (1,), "min": (1,), "max": (1,), "avg": (1,), "first": (1,),
    "last": (1,), "reduce": (2,),
}  # fmt: skip
_NUMERIC = (ir.INT, ir.FLOAT)
_ORDERED = (ir.INT, ir.FLOAT, ir.STR, ir.TIME)


@dataclass
class TableInfo:
    name: str
    span: Span
    key: ir.Type | None  # None: unknown after an error
    record: ir.RecordType | None
    partitions: int | None  # None: those of the aggregation's input
    filled_at: Span | None = None  # the aggregate that fills it
    table: ir.Table | None = None  # once an aggregate fills it (or at once, over a topic)
    source: str | None = None  # `from TOPIC`: the topic holds its rows, no aggregate fills it


def check_table(c: _Checker, decl: ast.TableDecl) -> None:
    from .check_topology import MAX_PARTITIONS

    name = decl.name.text
    record = c.resolve_type(decl.value_type, "topic")
    if record is not None and not isinstance(record, ir.RecordType):
        c.error(decl.value_type.span, "E314", f"a table's value cannot be {record}",
                ["a table holds one record per key: `table totals: Totals key str`"])  # fmt: skip
        record = None
    key: ir.Type | None = None
    partitions: int | None = None
    seen: dict[type, Span] = {}
    for opt in decl.options:
        word = "key" if isinstance(opt, ast.TopicKey) else "partitions"
        if type(opt) in seen:
            note = c.first_here(seen[type(opt)], f"'{word}'", "given")
            c.error(opt.span, "E207", f"table {name} gives '{word}' twice", notes=note)
            continue
        seen[type(opt)] = opt.span
        if isinstance(opt, ast.TopicKey):
            key = c.resolve_type(opt.type, "key")
            if key is not None and key not in KEY_TYPES:
                c.error(opt.type.span, "E303", f"a table key cannot be {key}",
                        ["keys are str, int or bytes"])  # fmt: skip
                key = None
        elif not isinstance(opt, ast.TopicPartitions):
            continue  # `from TOPIC` and `global` are check_join's
        elif not 1 <= opt.count.value <= MAX_PARTITIONS:
            c.error(opt.count.span, "E306",
                    f"a table needs 1 to {MAX_PARTITIONS:,} partitions, found "
                    f"{opt.count.value:,}")  # fmt: skip
        else:
            partitions = opt.count.value
    if ast.TopicKey not in seen:
        c.error(decl.span, "E303", f"table {name} has no key type",
                [f"write its key type, such as `table {name}: ... key str`"])  # fmt: skip
    if name in c.topics or name in c.tables:
        first = c.topics[name].span if name in c.topics else c.tables[name].span
        what = "topic" if name in c.topics else "table"
        c.error(decl.name.span, "E207", f"{what} '{name}' is already declared",
                ["tables and topics share one namespace"] if what == "topic" else [],
                notes=c.first_here(first, f"{what} '{name}'"))  # fmt: skip
        return
    changelog = f"{c.app}-{name}-changelog"
    if c.check_kafka_name(changelog, decl.name.span, f"the changelog of table {name}",
                          "shorten the app or table name"):  # fmt: skip
        if changelog in c.kafka_names:
            c.error(decl.name.span, "E208", f"the changelog of table {name}, Kafka topic "
                    f"'{changelog}', is already used by {c.owner_of(changelog)}",
                    notes=c.first_here(c.kafka_spans.get(changelog), f"Kafka topic "
                                       f"'{changelog}'", "used"))  # fmt: skip
        else:
            c.kafka_names[changelog] = f"the changelog of table {name}"
            c.kafka_spans[changelog] = decl.name.span
    c.tables[name] = TableInfo(name, decl.name.span, key, record, partitions)


def op_aggregate(
    c: _Checker, op: ast.AggregateOp, s: _Stream, agent: ast.AgentDecl
) -> ir.Op | None:
    ref = op.table
    info = c.tables.get(ref.text)
    if info is None:
        hints = list(did_you_mean(ref.text, c.tables))
        if ref.text in c.topics:
            hints.append(f"'{ref.text}' is a topic; an aggregate fills a table, declared as "
                         f"`table {ref.text}_by_key: Record key str`")  # fmt: skip
        c.error(ref.span, "E213", f"unknown table '{ref.text}'", hints)
    elif info.source is not None:
        c.error(ref.span, "E328", f"table {ref.text} holds the records of topic {info.source}, "
                "so no aggregate fills it", ["declare another table for this aggregate"])
        info = None
    elif info.filled_at is not None:
        c.error(ref.span, "E215", f"table {ref.text} is already filled by another aggregate",
                ["a table has one aggregate step; declare another table for this one"],
                notes=c.first_here(info.filled_at, f"table {ref.text}", "filled"))  # fmt: skip
        info = None
    else:
        info.filled_at = op.span
    window, emit, late, window_ok = check_time.check_window(c, op, s)
    elem, key = s.elem, s.key
    if isinstance(elem, ir.TupleType | ir.ListType | ir.EventType | ir.PrimType):
        c.error(op.span, "E309",
                f"aggregate needs a stream of records, but the stream carries {elem}",
                ["aggregate before `take`, `enumerate` or `process` hooks that return "
                 "other values"])  # fmt: skip
        elem = None
    record = elem if isinstance(elem, ir.RecordType) else None
    if info is not None and info.key is not None and key is not None and key != info.key:
        c.error(op.span, "E318", f"table {info.name} is keyed by {info.key}, but the stream is "
                f"keyed by {key}", [f"`group_by` a field of type {info.key} first"])  # fmt: skip
    fields = _check_fields(c, op, info, record, key, window)
    if info is not None:
        partitions = _co_partition(c, op, info, s, agent)
        if info.key is not None and info.record is not None:
            info.table = ir.Table(info.name, info.key, info.record, partitions,
                                  f"{c.app}-{info.name}-changelog", window)  # fmt: skip
    s.elem = None if info is None else info.record
    if s.elem is None or key is None or fields is None or not window_ok:
        return None

    text = _collapse(c.module.text[ref.span.start : op.span.end])
    return ir.Aggregate(ref.text, fields, text, s.elem, key, window, emit, late)


def _co_partition(c: _Checker, op: ast.AggregateOp, info: TableInfo, s: _Stream,
                  agent: ast.AgentDecl) -> int:  # fmt: skip
    """The table's partition count; its input must have as many (a `group_by` directly
    before writes its repartition topic with the table's count)."""
    before = agent.ops[agent.ops.index(op) - 1] if agent.ops.index(op) else None
    if isinstance(before, ast.GroupByOp):
        partitions = info.partitions or s.partitions
        if s.topic in c.repartition:  # (else the group_by is broken, and reported)
            held = c.repartition[s.topic]
            held.topic = dataclasses.replace(held.topic, partitions=partitions)
        s.partitions, s.inputs = partitions, (partitions,)
        return partitions
    partitions = info.partitions or max(s.inputs, default=s.partitions)
    if any(n != partitions for n in s.inputs):
        counts = " and ".join(sorted({str(n) for n in s.inputs}))
        c.error(op.span, "E319", f"table {info.name} has {partitions} partitions, but the "
                f"aggregate reads a stream of {counts} partitions",
                ["each table partition holds the keys of the same input partition: "
                 "`group_by` the key directly before `aggregate` (its topic then gets the "
                 "table's partitions), or give the table as many partitions"])  # fmt: skip
    return partitions


def _check_fields(c: _Checker, op: ast.AggregateOp, info: TableInfo | None,
                  record: ir.RecordType | None, key: ir.Type | None,
                  window: ir.Window | None) -> tuple[ir.Accumulate, ...] | None:  # fmt: skip
    """Each `field = AGG` typed against the table's record; None when any is broken."""
    table_fields = {} if info is None or info.record is None else \
        c.record_fields.get(info.record.name, {})  # fmt: skip
    known = info is not None and info.record is not None
    out: list[ir.Accumulate] = []
    ok = True
    seen: dict[str, Span] = {}
    for f in op.fields:
        name = f.name.text
        if name in seen:
            c.error(f.name.span, "E207", f"aggregate assigns field '{name}' twice",
                    notes=c.first_here(seen[name], f"field '{name}'", "assigned"))  # fmt: skip
            ok = False
            continue
        seen[name] = f.name.span
        target = table_fields.get(name)
        if target is None and known:
            assert info is not None and info.record is not None
            if (info.record.name, name) not in c.broken_fields:
                c.error(f.name.span, "E201", f"record {info.record.name} has no field '{name}'",
                        did_you_mean(name, table_fields))  # fmt: skip
            ok = False
        if isinstance(f.value, ast.AggWindow):
            acc = check_time.window_value(c, f, f.value, window, None if target is None
                                          else target.type, op.table.text)  # fmt: skip
        else:
            acc = _check_value(c, f, target, record, key, window)
        if acc is None:
            ok = False
        else:
            out.append(acc)
    if known:
        assert info is not None and info.record is not None
        missing = [n for n, fd in table_fields.items() if n not in seen and fd.default is None
                   and not isinstance(fd.type, ir.OptionalType)]  # fmt: skip
        if missing:
            quoted = [f"'{m}'" for m in missing]
            listed = " and ".join([", ".join(quoted[:-1]), quoted[-1]] if len(quoted) > 1
                                  else quoted)  # fmt: skip
            c.error(op.span, "E216",
                    f"aggregate leaves {listed} of table {info.name} unassigned",
                    [f"assign every field of {info.record.name} that has no default, such as "
                     f"`{missing[0]} = last({missing[0]})`"])  # fmt: skip
            ok = False
    return tuple(out) if ok and known else None


def _check_value(
    c: _Checker, f: ast.AggField, target: ir.Field | None, record: ir.RecordType | None,
    key: ir.Type | None, window: ir.Window | None,
) -> ir.Accumulate | None:
    value = f.value
    assert not isinstance(value, ast.AggWindow)
    field_type = None if target is None else target.type
    if isinstance(value, ast.AggKey):
        if key is None or field_type is None:
            return None
        if not _fits(key, field_type):
            _misfit(c, value.span, f.name.text, "key", key, field_type)
            return None
        return ir.Accumulate(f.name.text, "key", None, None, None, key, field_type)
    word = value.func.text
    if word not in FUNCTIONS:
        c.error(value.func.span, "E214", f"unknown aggregate function '{word}'",
                did_you_mean(word, [*FUNCTIONS, "key"])
                or [f"the aggregates are key, {', '.join(FUNCTIONS)}"])  # fmt: skip
        return None
    counts = FUNCTIONS[word]
    if len(value.args) not in counts:
        wants = " or ".join(str(n) for n in counts)
        c.error(value.span, "E317", f"{word} takes {wants} argument"
                f"{'' if counts == (1,) else 's'}, found {len(value.args)}",
                [_USAGE[word]])  # fmt: skip
        return None
    if word == "reduce":
        if window is not None and window.kind == "session":
            # Sessions merge when an event bridges two: the states must combine, and a
            # reduce hook only folds one element at a time.
            c.error(value.func.span, "E324", "reduce cannot be used with session windows",
                    ["two sessions merge when an event falls between them, and a reduce "
                     "hook cannot combine two states: use count, sum, min, max, avg, first "
                     "or last, or a tumbling or hopping window"])  # fmt: skip
            return None
        return _check_reduce(c, f, value, field_type, record)
    if record is None:
        return None
    if not value.args:
        if field_type is None:
            return None
        if not _fits(ir.INT, field_type):
            _misfit(c, value.span, f.name.text, "count()", ir.INT, field_type)
            return None
        return ir.Accumulate(f.name.text, "count", None, None, None, ir.INT, field_type)
    arg = value.args[0]
    if isinstance(arg, ast.ListLit):
        c.error(arg.span, "E317", f"{word} takes an expression over the element, not a list",
                [_USAGE[word]])  # fmt: skip
        return None
    expr = c.check_expr(arg, record)
    if expr is None:
        return None
    t = expr.type
    optional = isinstance(t, ir.OptionalType)
    base = t.inner if isinstance(t, ir.OptionalType) else t
    result: ir.Type
    if expr.type == ir.OptionalType(ir.AnyType()):  # a bare `null`
        c.error(arg.span, "E317", f"{word}(null) is always null")
        return None
    if word == "count":
        result = ir.INT
    elif word == "sum":
        if base not in _NUMERIC:
            _bad_arg(c, arg.span, word, "a number", t)
            return None
        result = base
    elif word == "avg":
        if base not in _NUMERIC:
            _bad_arg(c, arg.span, word, "a number", t)
            return None
        result = ir.OptionalType(ir.FLOAT) if optional else ir.FLOAT
    elif word in ("min", "max"):
        if base not in _ORDERED:
            _bad_arg(c, arg.span, word, "a number or a str", t)
            return None
        result = t
    else:  # first, last
        result = t
    if field_type is None:
        return None
    text = f"{word}({c.module.text[arg.span.start : arg.span.end]})"
    if not _fits(result, field_type):
        _misfit(c, value.span, f.name.text, text, result, field_type)
        return None
    kind: ir.AggKind = "count_expr" if word == "count" else word  # type: ignore[assignment]
    return ir.Accumulate(f.name.text, kind, expr, None, None, result, field_type)


def _check_reduce(c: _Checker, f: ast.AggField, value: ast.AggCall, field_type: ir.Type | None,
                  record: ir.RecordType | None) -> ir.Accumulate | None:  # fmt: skip

    hook_arg, init = value.args
    if not (isinstance(hook_arg, ast.FieldPath) and len(hook_arg.names) == 1):
        c.error(hook_arg.span, "E317", "the first argument of reduce is a hook's name",
                [_USAGE["reduce"]])  # fmt: skip
        return None
    ref = hook_arg.names[0]
    hook = c.find_hook(ref)
    literal = _literal(init)
    if literal is None:
        c.error(init.span, "E317", "the initial value of reduce is a literal, such as 0, \"\" "
                "or []", [_USAGE["reduce"]])  # fmt: skip
        return None
    if field_type is None:
        return None
    default = c.check_default(ast.FieldDecl(f.name, ast.NamedType(f.name, (), False, f.span),
                                            literal, f.span), field_type)  # fmt: skip
    if default is None:
        return None  # reported (E312) against the field's type
    if hook is None or record is None or None in hook.params:
        return None
    declared = f"{ref.text}({field_type}, {record}) -> {field_type}"
    params = [p for p in hook.params if p is not None]
    if len(params) != 2 or not _accepts(params[0], field_type) or not _accepts(params[1], record):
        shown = ", ".join(str(p) for p in params)
        c.error(ref.span, "E307", f"hook '{ref.text}' takes ({shown}), but reduce calls it with "
                f"the field's {field_type} and the element {record}",
                [f"declare it as `{declared}`"])  # fmt: skip
        return None
    if hook.returns != field_type:
        found = hook.returns if hook.has_return else "nothing"
        c.error(ref.span, "E308", f"reduce hook '{ref.text}' must return the field's type "
                f"{field_type}", [f"expected {field_type}, found {found}"])  # fmt: skip
        return None
    return ir.Accumulate(f.name.text, "reduce", None, ref.text, default, field_type, field_type)


def _literal(arg: ast.Expr | ast.ListLit) -> ast.Default | None:
    """The literal an argument spells (`-1` parses as a negation of 1), or None."""
    if isinstance(arg, ast.StrLit | ast.IntLit | ast.FloatLit | ast.BoolLit | ast.NullLit
                  | ast.ListLit):  # fmt: skip
        return arg
    if isinstance(arg, ast.UnaryExpr) and arg.op == "-":
        if isinstance(arg.operand, ast.IntLit):
            return ast.IntLit(-arg.operand.value, arg.span)
        if isinstance(arg.operand, ast.FloatLit):
            return ast.FloatLit(-arg.operand.value, arg.span)
    return None


def _fits(result: ir.Type, field: ir.Type) -> bool:
    """Whether a value of `result` may fill a field of type `field` (an int fills a float)."""
    if isinstance(result, ir.OptionalType):
        if not isinstance(field, ir.OptionalType):
            return False
        result, field = result.inner, field.inner
    elif isinstance(field, ir.OptionalType):
        field = field.inner
    return result == field or (result == ir.INT and field == ir.FLOAT)


def _misfit(c: _Checker, span: Span, name: str, what: str, result: ir.Type,
            field: ir.Type) -> None:  # fmt: skip
    hints = [f"expected {field}, found {result}"]
    if isinstance(result, ir.OptionalType) and not isinstance(field, ir.OptionalType):
        hints.append(f"{what} is null until a value is seen (nulls are skipped): declare the "
                     f"field as {field}?")  # fmt: skip
    c.error(span, "E317", f"{what} gives {result}, but field '{name}' is {field}", hints)


def _bad_arg(c: _Checker, span: Span, word: str, wants: str, found: ir.Type) -> None:
    c.error(span, "E317", f"{word} needs {wants}, found {found}", [_USAGE[word]])


_USAGE = {
    "count": "count() counts elements; count(x) those where x is not null",
    "sum": "such as `amount = sum(amount)`",
    "min": "such as `smallest = min(amount)`",
    "max": "such as `largest = max(amount)`",
    "avg": "such as `mean = avg(amount)`",
    "first": "such as `first_id = first(id)`",
    "last": "such as `last_id = last(id)`",
    "reduce": "such as `longest = reduce(longer, \"\")`, with the hook declared "
    "`longer(str, Order) -> str`",
}


def unfilled_tables(c: _Checker) -> list[Diagnostic]:
    """W503 for each table no `aggregate` fills (it would hold nothing)."""
    return [
        Diagnostic.warning(
            c.module.filename, info.span, "W503",
            f"table {info.name} is declared but no aggregate fills it",
            [f"fill it with `| aggregate {info.name} {{ ... }}` in an agent, or remove it"],
        )
        for info in c.tables.values()
        if info.filled_at is None and info.source is None
    ]
