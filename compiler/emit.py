"""Code generation: `emit(program) -> {path: text}`, pure and deterministic.

The checked IR is first shaped into small view objects (every name already a safe identifier,
every literal already escaped, every pipeline already spelled as method calls), then rendered
by Jinja2 templates that hold nothing but loops and conditionals, then formatted in memory by
the pinned black. Nothing here touches the file system: the CLI writes the result.
"""

from __future__ import annotations

import functools
import json
import multiprocessing as mp
import os
import re
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import PurePosixPath

import black
import jinja2

from . import ir
from .naming import KEYWORDS, Namer, doc_text, identifier, py_literal, snake

RUNTIME_REQUIREMENT = "streamc-runtime>=0.1,<0.2"
BLACK_MODE = black.Mode(target_versions={black.mode.TargetVersion.PY311}, line_length=100)


# ---------------------------------------------------------------------------------------------
# View model: what the templates see


@dataclass(frozen=True)
class FieldView:
    attr: str
    annotation: str
    value: str | None  # right-hand side of the class attribute, if any


@dataclass(frozen=True)
class RecordView:
    class_name: str
    doc: str
    fields: tuple[FieldView, ...]


@dataclass(frozen=True)
class TopicView:
    comment: str
    lines: tuple[str, ...]  # the declaration, laid out as black would


@dataclass(frozen=True)
class HelperView:
    """A small module-level function: a `where` predicate or a `group_by` key getter."""

    name: str
    param: str
    param_type: str
    returns: str
    doc: str
    expression: str


@dataclass(frozen=True)
class FunctionView:
    """A module-level function of several statements: an aggregate's fold or row."""

    header: str  # `def fold_totals(state: TotalsState, order: Order) -> TotalsState:`
    doc: str | None
    body: tuple[str, ...]  # statements, indented relative to the body


@dataclass(frozen=True)
class AgentView:
    module: str
    function: str
    name: str  # a Python literal
    doc: str
    sources: str
    input_type: str
    user_imports: tuple[str, ...]  # records and hooks, as lines
    typing_imports: tuple[str, ...]
    runtime_imports: tuple[str, ...]
    helpers: tuple[HelperView, ...]
    loop: tuple[str, ...]  # the `async for` header, already laid out as black would
    body: tuple[str, ...]  # the loop's statements, indented relative to it
    functions: tuple[FunctionView, ...] = ()
    std_imports: tuple[str, ...] = ()
    checks: tuple[str, ...] = ()  # module-level result checks of hooks a fused loop calls


@dataclass(frozen=True)
class PackageView:
    app: str  # a Python literal
    app_title: str  # for prose (docstrings, README), escaped
    package: str
    distribution: str
    runtime_requirement: str
    source_name: str
    records: tuple[RecordView, ...]
    topics: tuple[TopicView, ...]
    topic_imports: tuple[str, ...]
    agents: tuple[AgentView, ...]
    hook_modules: tuple[str, ...]
    dlq_topic: str
    helper_modules: tuple[str, ...] = ()  # local modules the hooks import, in hooks/_local
    tables: tuple[TopicView, ...] = ()
    record_runtime_imports: tuple[str, ...] = ("Record",)  # what records.py imports
    topic_runtime_imports: tuple[str, ...] = ()  # window kinds (and Time) topics.py uses
    requires: tuple[str, ...] = ()  # the `requires` of the .sdl, as TOML strings
    requires_doc: tuple[str, ...] = ()  # the same as written in the README


# ---------------------------------------------------------------------------------------------
# Shaping the IR


class _Shaper:
    def __init__(self, program: ir.Program) -> None:
        self.program = program
        # Agent modules import record classes and hooks by name, so those share one namespace;
        # topics are always qualified (`topics.orders`) and get their own.
        names = Namer()
        # The runtime's class of `time` values and its window, imported by name.
        names.reserve("Time", "Window")
        self.record_names = {r.name: names.claim(r.name) for r in program.records}
        self.hook_names = {h.name: names.claim(h.name) for h in program.hooks}
        self.aggregates = {op.table: op for a in program.agents for op in a.ops
                           if isinstance(op, ir.Aggregate)}  # fmt: skip
        self.state_names = {
            t.name: names.claim(_camel(t.name) + "State") for t in program.tables
            if t.source is None  # a table over a topic holds the topic's records, no state
        }
        self.imported_names = frozenset(names.taken)
        topic_names = Namer(set(self.record_names.values()) | {"app"})
        topic_names.reserve(*self.state_names.values(), "Tumbling", "Hopping", "Session")
        self.topic_attrs = {t.name: topic_names.claim(t.name) for t in program.topics}
        # Tables share the topics' namespace in the source, and their module in the package.
        self.table_attrs = {t.name: topic_names.claim(t.name) for t in program.tables}
        module_names = Namer({"__init__"}, unsafe=KEYWORDS)
        self.hook_modules = {m.module: module_names.claim(m.module) for m in program.hook_modules}
        # A field may not shadow a name its class body uses later in an annotation or default.
        self.field_unsafe = (
            KEYWORDS
            | frozenset({"str", "int", "float", "bool", "bytes", "list", "None", "msgspec",
                         "Time"})
            | frozenset(self.record_names.values())
        )

    # -- types ---------------------------------------------------------------------------

    def annotation(self, t: ir.Type) -> str:
        match t:
            case ir.PrimType(name="time"):
                # An aware UTC datetime; its own class so that the codec reads epoch ms too.
                return "Time"
            case ir.PrimType(name=name):
                return name
            case ir.ListType(item=item):
                return f"list[{self.annotation(item)}]"
            case ir.OptionalType(inner=inner):
                return f"{self.annotation(inner)} | None"
            case ir.RecordType(name=name):
                return self.record_names[name]
            case ir.TupleType(items=items):
                return "tuple[" + ", ".join(self.annotation(i) for i in items) + "]"
            case ir.EventType(key=key, value=value):
                return f"Event[{self.annotation(key)}, {self.annotation(value)}]"
            case ir.AnyType():
                return "Any"
        raise AssertionError(t)

    def records_in(self, t: ir.Type) -> set[str]:
        match t:
            case ir.RecordType(name=name):
                return {self.record_names[name]}
            case ir.ListType(item=inner) | ir.OptionalType(inner=inner):
                return self.records_in(inner)
            case ir.TupleType(items=items):
                return set().union(*(self.records_in(i) for i in items))
            case ir.EventType(key=key, value=value):
                return self.records_in(key) | self.records_in(value)
        return set()

    # -- records -------------------------------------------------------------------------

    def field_attrs(self, record: ir.Record) -> dict[str, str]:
        namer = Namer(unsafe=self.field_unsafe)
        return {f.name: namer.claim(f.name) for f in record.fields}

    def record(self, record: ir.Record) -> RecordView:
        attrs = self.field_attrs(record)
        fields = []
        for f in record.fields:
            attr = attrs[f.name]
            options: list[str] = []
            if attr != f.name:
                options.append(f"name={py_literal(f.name)}")
            default = f.default
            if default is None and isinstance(f.type, ir.OptionalType):
                default = ir.Default(None)
            simple_default: str | None = None
            if default is not None:
                if isinstance(default.value, tuple):
                    factory = f"lambda: {py_literal(default.value)}" if default.value else "list"
                    options.insert(0, f"default_factory={factory}")
                elif options:
                    options.insert(0, f"default={py_literal(default.value)}")
                else:
                    simple_default = py_literal(default.value)
            value = simple_default
            if options:
                value = f"msgspec.field({', '.join(options)})"
            fields.append(FieldView(attr, self.annotation(f.type), value))
        doc = record.doc or f"Record {record.name} of {self.program.source_name}."
        return RecordView(self.record_names[record.name], doc_text(doc), tuple(fields))

    # -- topics --------------------------------------------------------------------------

    def topic(self, topic: ir.Topic) -> TopicView:
        comment = {
            "declared": f"topic {topic.name}",
            "implicit": "named by a string in a pipeline",
            "repartition": "repartition topic of a group_by",
        }[topic.kind]
        args = [
            py_literal(topic.kafka_name),
            f"key_type={self.annotation(topic.key_type)}",
            f"value_type={self.annotation(topic.value_type)}",
            f"partitions={topic.partitions}",
        ]
        if topic.kind == "repartition":
            args.append("internal=True")
        if topic.positions:
            args.append("positions=True")
        if topic.timestamp_field is not None:
            record = self.program.record(_record_name(topic.value_type))
            attr = self.field_attrs(record)[topic.timestamp_field]
            args.append(f"timestamp_field={py_literal(attr)}")
        if topic.compacted:
            args.append('config={"cleanup.policy": "compact"}')
        return TopicView(
            comment=doc_text(comment),
            lines=call_lines(f"{self.topic_attrs[topic.name]} = app.topic", args),
        )

    # -- tables --------------------------------------------------------------------------

    def table(self, table: ir.Table) -> TopicView:
        if table.source is not None:
            # Its topic is its changelog: no state, no changelog of its own.
            args = [
                py_literal(table.name),
                f"key_type={self.annotation(table.key_type)}",
                f"value_type={self.annotation(table.value_type)}",
                f"source={self.topic_attrs[table.source]}",
                f"global_={table.global_}",
            ]
            return TopicView(
                comment=doc_text(f"table {table.name}, the records of topic {table.source}"
                                 + (" (global)" if table.global_ else "")),
                lines=call_lines(f"{self.table_attrs[table.name]} = app.table", args),
            )
        args = [
            py_literal(table.name),
            f"key_type={self.annotation(table.key_type)}",
            f"value_type={self.annotation(table.value_type)}",
            f"state_type={self.state_names[table.name]}",
            f"partitions={table.partitions}",
        ]
        if table.window is not None:
            args.append(f"window={_window_call(table.window)}")
        return TopicView(
            comment=doc_text(f"table {table.name}, changelog {table.changelog}"),
            lines=call_lines(f"{self.table_attrs[table.name]} = app.table", args),
        )

    def state(self, table: ir.Table) -> tuple[RecordView, _State]:
        """The record of a table's accumulators, and where each clause keeps them."""
        layout = _State(self, self.aggregates[table.name])
        return (
            RecordView(self.state_names[table.name],
                       doc_text(f"The accumulators of table {table.name}: "
                                f"{self.aggregates[table.name].text}"), layout.fields),
            layout,
        )  # fmt: skip

    def aggregate_functions(
        self, op: ir.Aggregate, element: ir.Type, local: Namer, used_hooks: set[str]
    ) -> tuple[str, str, str | None, list[FunctionView], bool]:
        """The fold, row (and for a session window merge) functions of an aggregate, their
        names, and whether the fold needs `isawaitable` (a reduce hook whose result may or may
        not be awaitable)."""
        table = self.program.table(op.table)
        state_class = self.state_names[table.name]
        _, layout = self.state(table)
        fold_name = local.claim(f"fold_{op.table}")
        row_name = local.claim(f"row_{op.table}")
        scope = Namer(set(local.taken))
        state = scope.claim("state")
        param = local_param(element, scope)
        body: list[str] = []
        is_async = needs_isawaitable = False
        for acc in op.fields:
            attr = layout.attrs.get(acc.field, "")
            value = "" if acc.expr is None else self.expression(acc.expr, param, element)
            optional = acc.expr is not None and isinstance(acc.expr.type, ir.OptionalType)
            simple = _PLAIN_PATH.fullmatch(value) is not None
            # An expression used twice, or tested for null, is computed once into a local,
            # unless it is a plain field path (which mypy narrows as it is).
            if (optional or acc.kind in ("min", "max")) and not simple and acc.kind not in (
                "first", "last"
            ):
                name = scope.claim(acc.field)
                body.append(f"{name} = {value}")
                value = name
            target = f"{state}.{attr}"
            match acc.kind:
                case "count" | "count_expr":
                    if optional:
                        body += [f"if {value} is not None:", f"    {target} += 1"]
                    else:
                        body.append(f"{target} += 1")
                case "sum":
                    if optional:
                        body += [f"if {value} is not None:", f"    {target} += {value}"]
                    else:
                        body.append(f"{target} += {value}")
                case "avg":
                    total, count = layout.hidden[acc.field]
                    lines = [f"{state}.{total} += {value}", f"{state}.{count} += 1"]
                    if optional:
                        lines = [f"if {value} is not None:", *(f"    {x}" for x in lines)]
                    body += lines
                case "min" | "max":
                    cmp = "<" if acc.kind == "min" else ">"
                    test = f"{target} is None or {value} {cmp} {target}"
                    if optional:
                        test = f"{value} is not None and ({test})"
                    body += [f"if {test}:", f"    {target} = {value}"]
                case "first":
                    if optional:
                        (seen,) = layout.hidden[acc.field]
                        body += [f"if not {state}.{seen}:", f"    {target} = {value}",
                                 f"    {state}.{seen} = True"]  # fmt: skip
                    else:
                        body += [f"if {target} is None:", f"    {target} = {value}"]
                case "last":
                    body.append(f"{target} = {value}")
                case "reduce":
                    assert acc.hook is not None
                    used_hooks.add(acc.hook)
                    hook = self.program.hook(acc.hook)
                    call = f"{self.hook_names[acc.hook]}({target}, {param})"
                    if hook.call_proven and hook.is_async:
                        is_async = True
                        body.append(f"{target} = await {call}")
                    elif hook.call_proven:
                        body.append(f"{target} = {call}")
                    else:
                        # A plain `def` may hand back an awaitable (a decorator wrapping an
                        # `async def`): awaited when it is one, as the runtime does for hooks.
                        is_async = needs_isawaitable = True
                        result = scope.claim(acc.field)
                        body += [f"{result} = {call}",
                                 f"{target} = await {result} if isawaitable({result}) else "
                                 f"{result}"]  # fmt: skip
        body.append(f"return {state}")
        header = (f"{'async ' if is_async else ''}def {fold_name}({state}: {state_class}, "
                  f"{param}: {self.annotation(element)}) -> {state_class}:")  # fmt: skip
        fold = FunctionView(header, doc_text(op.text), tuple(body))

        row_scope = Namer(set(local.taken))
        key = row_scope.claim("key")
        window = row_scope.claim("window") if table.window is not None else ""
        state = row_scope.claim("state")
        record = self.program.record(table.value_type.name)
        attrs = self.field_attrs(record)
        args: list[str] = []
        unset: list[str] = []
        for acc in op.fields:
            attr = layout.attrs.get(acc.field, "")
            match acc.kind:
                case "key":
                    value = key
                case "window_start" | "window_end":
                    value = f"{window}.{acc.kind.removeprefix('window_')}"
                case "avg":
                    total, count = layout.hidden[acc.field]
                    value = f"{state}.{total} / {state}.{count}"
                    if isinstance(acc.field_type, ir.OptionalType):
                        value += f" if {state}.{count} else None"
                case _:
                    value = f"{state}.{attr}"
                    if layout.nullable(acc) and not isinstance(acc.field_type, ir.OptionalType):
                        unset.append(f"{value} is not None")
            args.append(f"{attrs[acc.field]}={value}")
        row_body: list[str] = []
        if unset:
            # Set by the first fold of the key: a row is only made after one.
            row_body.append(f"assert {' and '.join(unset)}")
        row_body.append(f"return {self.record_names[record.name]}({', '.join(args)})")
        window_param = "" if not window else f"{window}: Window, "
        row_header = (f"def {row_name}({key}: {self.annotation(table.key_type)}, {window_param}"
                      f"{state}: {state_class}) -> {self.record_names[record.name]}:")  # fmt: skip
        row = FunctionView(row_header, doc_text(f"A new row of table {table.name}."),
                           tuple(row_body))  # fmt: skip
        functions = [fold, row]
        merge_name = None
        if table.window is not None and table.window.kind == "session":
            merge_name = local.claim(f"merge_{op.table}")
            functions.append(self.merge_function(op, table, layout, merge_name, local))
        return fold_name, row_name, merge_name, functions, needs_isawaitable

    def merge_function(self, op: ir.Aggregate, table: ir.Table, layout: _State, name: str,
                       local: Namer) -> FunctionView:  # fmt: skip
        """`merge_<table>(a, b)`: the state of two sessions an event bridges, `a` the earlier."""
        state_class = self.state_names[table.name]
        scope = Namer(set(local.taken))
        a, b = scope.claim("a"), scope.claim("b")
        body: list[str] = []
        for acc in op.fields:
            attr = layout.attrs.get(acc.field, "")
            x, y = f"{a}.{attr}", f"{b}.{attr}"
            match acc.kind:
                case "count" | "count_expr" | "sum":
                    body.append(f"{x} += {y}")
                case "avg":
                    for hidden in layout.hidden[acc.field]:
                        body.append(f"{a}.{hidden} += {b}.{hidden}")
                case "min" | "max":
                    cmp = "<" if acc.kind == "min" else ">"
                    body += [f"if {x} is None or ({y} is not None and {y} {cmp} {x}):",
                             f"    {x} = {y}"]  # fmt: skip
                case "first":
                    if acc.field in layout.hidden:
                        (seen,) = layout.hidden[acc.field]
                        body += [f"if not {a}.{seen}:", f"    {x} = {y}",
                                 f"    {a}.{seen} = {b}.{seen}"]  # fmt: skip
                    else:
                        body += [f"if {x} is None:", f"    {x} = {y}"]
                case "last":
                    body.append(f"{x} = {y}")
        body.append(f"return {a}")
        header = f"def {name}({a}: {state_class}, {b}: {state_class}) -> {state_class}:"
        doc = (f"The state of two sessions of table {table.name} that an event joins: {a} the "
               f"earlier.")  # fmt: skip
        return FunctionView(header, doc_text(doc), tuple(body))

    # -- agents --------------------------------------------------------------------------

    def agent(self, agent: ir.Agent, module: str) -> AgentView:
        local = Namer(set(self.imported_names))
        function = local.claim(agent.name)
        helpers: list[HelperView] = []
        chain: list[str] = []
        used_hooks: set[str] = set()
        types_seen: list[ir.Type] = [agent.input]
        state_types: set[str] = set()
        element = agent.input
        sink: ir.Sink | None = None
        functions: list[FunctionView] = []
        std_imports: set[str] = set()
        windowed = False
        # The stateless operations at the end of the pipeline are fused into one plain loop
        # over each run of elements (`Stream.runs()`); the chain keeps everything before them.
        cut = len(agent.ops)
        while cut > 0 and isinstance(agent.ops[cut - 1], _FUSED):
            cut -= 1
        chain_at: list[int] = []  # len(chain) before each operation
        elements: list[ir.Type] = []  # the element each operation receives
        made_fn: dict[int, str] = {}  # the where helper or select function of an operation

        def returns(hook: str) -> str:
            """The hook's declared result type, which the runtime checks every result against."""
            declared = self.program.hook(hook).returns
            assert declared is not None
            types_seen.append(declared)
            return self.annotation(declared)

        for index, op in enumerate(agent.ops):
            chain_at.append(len(chain))
            elements.append(element)
            match op:
                case ir.Process(hooks=hooks):
                    used_hooks.update(hooks)
                    fns = ", ".join(self.hook_names[h] for h in hooks)
                    declared = ", ".join(returns(h) for h in hooks)
                    declared += "," if len(hooks) == 1 else ""
                    chain.append(f"process({fns}, returns=({declared}))")
                case ir.Filter(hook=hook):
                    used_hooks.add(hook)
                    chain.append(f"filter({self.hook_names[hook]}, returns={returns(hook)})")
                case ir.Where(expr=expr, text=text, names=names):
                    name = local.claim(f"{agent.name}_where")
                    parts, param, unpack = self.parts(element, names, local)
                    expression = _Expression(self, parts).render(expr)
                    if unpack is None:
                        helpers.append(
                            HelperView(
                                name=name,
                                param=param,
                                param_type=self.annotation(element),
                                returns="bool",
                                doc=doc_text(f"where {text}"),
                                expression=expression,
                            )
                        )
                    else:
                        header = f"def {name}({param}: {self.annotation(element)}) -> bool:"
                        functions.append(FunctionView(header, doc_text(f"where {text}"),
                                                      (unpack, f"return {expression}")))
                    made_fn[index] = name
                    chain.append(f"filter({name})")
                case ir.Join(table=table, field=path, left=left):
                    on = ""
                    if path is not None:
                        getter = local.claim("by_" + "_".join(path))
                        param = local_param(element, local)
                        helpers.append(
                            HelperView(
                                name=getter,
                                param=param,
                                param_type=self.annotation(element),
                                returns=self.annotation(self.program.table(table).key_type),
                                doc=doc_text(f"join {table} on {'.'.join(path)}"),
                                expression=self.field_path(param, path, element),
                            )
                        )
                        on = f", on={getter}"
                    chain.append(f"join(topics.{self.table_attrs[table]}{on}"
                                 f"{', left=True' if left else ''})")  # fmt: skip
                case ir.Select(record=record_name, fields=values, text=text, names=names):
                    name = local.claim(f"select_{snake(record_name)}")
                    parts, param, unpack = self.parts(element, names, local)
                    selected = self.program.record(record_name)
                    field_attrs = self.field_attrs(selected)
                    render = _Expression(self, parts)
                    floats = {f.name for f in selected.fields if _strip(f.type) == ir.FLOAT}
                    # An int fills a float field as a float: the topic's JSON says 3.0, not 3.
                    kwargs = ", ".join(
                        f"{field_attrs[f]}=float({render.render(v)})"
                        if f in floats and v.type == ir.INT
                        else f"{field_attrs[f]}={render.render(v)}" for f, v in values
                    )  # fmt: skip
                    lines = (*([unpack] if unpack else []),
                             f"return {self.record_names[record_name]}({kwargs})")  # fmt: skip
                    header = (f"def {name}({param}: {self.annotation(element)}) -> "
                              f"{self.record_names[record_name]}:")  # fmt: skip
                    functions.append(FunctionView(header, doc_text(text), lines))
                    made_fn[index] = name
                    chain.append(f"process({name})")
                case ir.GroupBy(field=path, hook=hook, topic=topic):
                    target = f"topics.{self.topic_attrs[topic]}"
                    checked = ""
                    if hook is not None:
                        used_hooks.add(hook)
                        getter = self.hook_names[hook]
                        checked = f", returns={returns(hook)}"
                    else:
                        assert path is not None
                        param = local_param(element, local)
                        getter = local.claim("by_" + "_".join(path))
                        helpers.append(
                            HelperView(
                                name=getter,
                                param=param,
                                param_type=self.annotation(element),
                                returns=self.annotation(op.key),
                                doc=doc_text(f"group_by {'.'.join(path)}"),
                                expression=self.field_path(param, path, element),
                            )
                        )
                    chain.append(f"group_by({getter}, topic={target}{checked})")
                case ir.Take(n=n, within_seconds=within):
                    if within is None:
                        chain.append(f"take({n})")
                    else:
                        chain.append(f"take({n}, within={py_literal(float(within))})")
                case ir.Enumerate(start=start):
                    chain.append("enumerate()" if start == 0 else f"enumerate({start})")
                case ir.Through(topic=topic):
                    chain.append(f"through(topics.{self.topic_attrs[topic]})")
                case ir.Echo(topics=names):
                    targets = ", ".join(f"topics.{self.topic_attrs[t]}" for t in names)
                    chain.append(f"echo({targets})")
                case ir.To(topic=topic):
                    chain.append(f"to(topics.{self.topic_attrs[topic]})")
                case ir.Items():
                    chain.append("items()")
                case ir.Events():
                    chain.append("events()")
                case ir.Sink():
                    sink = op
                    used_hooks.add(op.hook)
                case ir.Aggregate(table=table):
                    fold, row, merge, made, awaits = self.aggregate_functions(
                        op, element, local, used_hooks
                    )
                    functions += made
                    if awaits:
                        std_imports.add("from inspect import isawaitable")
                    state_types.add(self.state_names[table])
                    # What reduce hooks return is checked by the runtime, as processors' is.
                    _, layout = self.state(self.program.table(table))
                    checked = ", ".join(
                        f"{py_literal(layout.attrs[acc.field])}: "
                        f"({self.hook_names[acc.hook]}, {returns(acc.hook)})"
                        for acc in op.fields
                        if acc.kind == "reduce" and acc.hook is not None
                    )
                    args = f"topics.{self.table_attrs[table]}, fold={fold}, row={row}"
                    if checked:
                        args += f", returns={{{checked}}}"
                    if op.window is not None:
                        windowed = True
                        args += f", emit={py_literal(op.emit)}"
                    if op.late is not None:
                        args += f", late=topics.{self.topic_attrs[op.late]}"
                    if merge is not None:
                        args += f", merge={merge}"
                    chain.append(f"aggregate({args})")
                case ir.JoinStream(topic=topic, how=how, within_ms=within, grace_ms=grace):
                    args = f"topics.{self.topic_attrs[topic]}, within={within:_}"
                    if grace:
                        args += f", grace={grace:_}"
                    if how != "inner":
                        args += f", how={py_literal(how)}"
                    args += f", value_type={self.record_names[_record_name(op.element)]}"
                    if op.late is not None:
                        args += f", late=topics.{self.topic_attrs[op.late]}"
                    chain.append(f"join_stream({args})")
                case ir.Distinct(field=path, within_ms=within):
                    args = f"within={within:_}"
                    if path is not None:
                        std_imports.add("from operator import attrgetter")
                        attrs = py_literal(".".join(self.attr_path(element, path)))
                        args += f", field=attrgetter({attrs})"
                    chain.append(f"distinct({args})")
            element = op.out
            types_seen.append(element)

        checks: list[str] = []
        if cut < len(agent.ops):
            chain = chain[: chain_at[cut]]
            fused = _Fused(self, agent, cut, elements, made_fn, local)
            body = fused.lines()
            checks = fused.checks
            runtime_imports = ["Stream", *(["Window"] if windowed else []), *sorted(fused.imports)]
            counters = ", ".join(str(n) for n in fused.counters)
            counters += "," if len(fused.counters) == 1 else ""
            chain.append(f"runs(counters=({counters}))" if counters else "runs()")
            target = "run"
        else:
            body, target, runtime_imports = self.unfused_body(agent, element, sink, local)
            runtime_imports[1:1] = ["Window"] if windowed else []

        hook_imports: dict[str, list[str]] = {}
        for hook_name in sorted(used_hooks):
            alias = self.hook_names[hook_name]
            spelled = hook_name if alias == hook_name else f"{hook_name} as {alias}"
            hook_module = self.hook_modules[self.program.hook(hook_name).module]
            hook_imports.setdefault(hook_module, []).append(spelled)

        records: set[str] = set(state_types)
        for t in types_seen:
            records |= self.records_in(t)
        annotations = " ".join(self.annotation(t) for t in types_seen)
        if "Event[" in annotations:
            runtime_imports.insert(0, "Event")
        if _uses_time([annotations]):
            runtime_imports.append("Time")
        sources = " & ".join(f"topics.{self.topic_attrs[s]}" for s in agent.sources)
        return AgentView(
            module=module,
            function=function,
            name=py_literal(agent.name),
            doc=doc_text(agent.text),
            sources=sources,
            input_type=self.annotation(agent.input),
            user_imports=(
                *import_lines("..records", sorted(records)),
                *(
                    line
                    for name, names in sorted(hook_imports.items())
                    for line in import_lines(f"..hooks.{name}", names)
                ),
            ),
            typing_imports=("Any",) if "Any" in annotations.split("[") else (),
            runtime_imports=tuple(runtime_imports),
            helpers=tuple(helpers),
            loop=loop_layout(target, chain),
            body=body,
            checks=tuple(checks),
            functions=tuple(functions),
            std_imports=tuple(sorted(std_imports)),
        )

    def unfused_body(
        self, agent: ir.Agent, element: ir.Type, sink: ir.Sink | None, local: Namer
    ) -> tuple[tuple[str, ...], str, list[str]]:
        """The body of an `async for` over the chain itself (nothing stateless to fuse at the
        end of the pipeline): the sink call, or `pass`."""
        producer = next((op for op in reversed(agent.ops) if not isinstance(op, ir.Sink)), None)
        target_names = loop_targets(element, producer, local)
        target = ", ".join(target_names)
        runtime_imports = ["Stream"]
        if sink is None:
            return ("pass",), target, runtime_imports
        # A tuple goes to a one-parameter sink whole, to a sink of as many parameters in
        # pieces.
        args = target if sink.unpack or len(target_names) == 1 else f"({target})"
        called = self.program.hook(sink.hook)
        fn = self.hook_names[sink.hook]
        if not called.call_proven:
            runtime_imports.append("sink")
            return (f"await sink({fn}, {args})",), target, runtime_imports
        if called.is_async:
            return (f"await {fn}({args})",), target, runtime_imports
        return (f"{fn}({args})",), target, runtime_imports

    def attr_path(self, element: ir.Type, path: tuple[str, ...]) -> list[str]:
        """The Python attribute names of a field path on a record."""
        out: list[str] = []
        current = element
        for name in path:
            record = self.program.record(_record_name(current))
            out.append(self.field_attrs(record)[name])
            current = next(f.type for f in record.fields if f.name == name)
        return out

    # -- expressions ---------------------------------------------------------------------

    def field_path(self, param: str, path: tuple[str, ...], element: ir.Type) -> str:
        """`order.customer.country`; through an optional record the path is null-safe:
        `customer.country` is null when `customer` is, as in SQL, instead of an error."""
        text = param
        guards: list[str] = []
        current: ir.Type = element
        for name in path:
            if isinstance(current, ir.OptionalType):
                guards.append(text)
            record = self.program.record(_record_name(current))
            text = f"{text}.{self.field_attrs(record)[name]}"
            current = next(f.type for f in record.fields if f.name == name)
        if not guards:
            return text
        condition = " or ".join(f"{guard} is None" for guard in guards)
        return f"(None if {condition} else {text})"

    def expression(self, expr: ir.Expr, param: str, element: ir.Type) -> str:
        return _Expression(self, ((param, element),)).render(expr)

    def parts(self, element: ir.Type, names: tuple[str | None, ...],
              local: Namer) -> tuple[tuple[tuple[str, ir.Type], ...], str, str | None]:  # fmt: skip
        """The parameters an expression over the element sees, named as the source names them
        (else after their record): the element, or after a join the element and the row. Also
        the function's one parameter, and for a pair the line that unpacks it."""
        scope = Namer(set(local.taken))
        types = element.items if len(names) == 2 and isinstance(element, ir.TupleType) else (
            element,)  # fmt: skip
        parts = tuple(
            (scope.claim(name) if name is not None else local_param(_strip(t), scope), t)
            for name, t in zip((*names, None, None), types, strict=False)
        )
        if len(parts) == 1:
            return parts, parts[0][0], None
        pair = scope.claim("pair")
        return parts, pair, f"{', '.join(p for p, _ in parts)} = {pair}"


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


LINE_LENGTH = 100


def call_lines(callee: str, args: list[str]) -> tuple[str, ...]:
    """A call statement at module level, wrapped as black wraps it when too long."""
    one_line = f"{callee}({', '.join(args)})"
    if len(one_line) <= LINE_LENGTH:
        return (one_line,)
    inner = "    " + ", ".join(args)
    if len(inner) <= LINE_LENGTH:
        return (f"{callee}(", inner, ")")
    return (f"{callee}(", *(f"    {arg}," for arg in args), ")")


def import_lines(module: str, names: Iterable[str]) -> tuple[str, ...]:
    """`from module import a, b`, wrapped one name a line when too long, as black does."""
    names = list(names)
    if not names:
        return ()
    line = f"from {module} import {', '.join(names)}"
    if len(line) <= LINE_LENGTH:
        return (line,)
    return (f"from {module} import (", *(f"    {name}," for name in names), ")")


def loop_layout(target: str, chain: list[str]) -> tuple[str, ...]:
    """The agent's `async for` header in the layout black gives it, as lines.

    black would reach the same result from one long line, but formatting output that is
    already stable takes one pass instead of two: this halves the time to build programs with
    hundreds of agents. Layouts not reproduced here are left to black.
    """
    calls = "".join(f".{call}" for call in chain)
    one_line = f"    async for {target} in stream{calls}:"
    if len(one_line) <= LINE_LENGTH:
        return (one_line.strip(),)
    inner = f"        stream{calls}"
    head, tail = f"async for {target} in (", "):"
    if len(inner) <= LINE_LENGTH or len(chain) < 3:
        return (head, inner[4:], tail)
    return (head, f"    stream.{chain[0]}", *(f"    .{c}" for c in chain[1:]), tail)


def _is_null(expr: ir.Expr) -> bool:
    return isinstance(expr, ir.Const) and expr.value is None


def _record_name(t: ir.Type) -> str:
    while isinstance(t, ir.OptionalType):
        t = t.inner
    assert isinstance(t, ir.RecordType), t
    return t.name


_PLAIN_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")


def _window_call(window: ir.Window) -> str:
    """`Tumbling(size=60_000, grace=10_000)`: a table's window, in milliseconds."""
    if window.kind == "session":
        return f"Session(gap={window.size_ms:_}, grace={window.grace_ms:_})"
    if window.kind == "hopping":
        return (f"Hopping(size={window.size_ms:_}, advance={window.advance_ms:_}, "
                f"grace={window.grace_ms:_})")  # fmt: skip
    return f"Tumbling(size={window.size_ms:_}, grace={window.grace_ms:_})"


def _uses_time(annotations: Iterable[str]) -> bool:
    return any("Time" in re.split(r"[^A-Za-z0-9_]+", a) for a in annotations)


def _camel(name: str) -> str:
    """`totals_by_account` -> `TotalsByAccount`, for a table's state record."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("_") if part) or "Table"


class _State:
    """The fields of a table's state record: one per clause that accumulates (not `key`),
    plus hidden ones: avg keeps `<field>_sum` and `<field>_count`, first of an optional
    expression `<field>_seen` (a null first value is a value)."""

    def __init__(self, shaper: _Shaper, op: ir.Aggregate) -> None:
        names = Namer(unsafe=shaper.field_unsafe)
        self.attrs: dict[str, str] = {}
        self.hidden: dict[str, tuple[str, ...]] = {}
        for acc in op.fields:
            if acc.kind not in ("key", "avg", "window_start", "window_end"):
                self.attrs[acc.field] = names.claim(acc.field)
        fields: list[FieldView] = []
        for acc in op.fields:
            attr = self.attrs.get(acc.field, "")
            base = acc.type.inner if isinstance(acc.type, ir.OptionalType) else acc.type
            if acc.kind in ("count", "count_expr", "sum"):
                numeric = acc.field_type.inner if isinstance(acc.field_type, ir.OptionalType) \
                    else acc.field_type  # fmt: skip
                zero = "0.0" if numeric == ir.FLOAT else "0"
                fields.append(FieldView(attr, shaper.annotation(numeric), zero))
            elif acc.kind == "avg":
                total, count = names.claim(f"{acc.field}_sum"), names.claim(f"{acc.field}_count")
                self.hidden[acc.field] = (total, count)
                fields += [FieldView(total, "float", "0.0"), FieldView(count, "int", "0")]
            elif acc.kind in ("min", "max", "first", "last"):
                fields.append(FieldView(attr, f"{shaper.annotation(base)} | None", "None"))
                if acc.kind == "first" and isinstance(acc.type, ir.OptionalType):
                    seen = names.claim(f"{acc.field}_seen")
                    self.hidden[acc.field] = (seen,)
                    fields.append(FieldView(seen, "bool", "False"))
            elif acc.kind == "reduce":
                assert acc.init is not None
                init = acc.init.value
                if isinstance(init, tuple):
                    factory = f"lambda: {py_literal(init)}" if init else "list"
                    value = f"msgspec.field(default_factory={factory})"
                else:
                    value = py_literal(init)
                fields.append(FieldView(attr, shaper.annotation(acc.field_type), value))
        self.fields = tuple(fields)

    @staticmethod
    def nullable(acc: ir.Accumulate) -> bool:
        """Whether the state keeps this clause's value as `T | None` (None: nothing seen)."""
        return acc.kind in ("min", "max", "first", "last")


def _named_after(record: str, scope: Namer) -> str:
    """`order` for an Order; `value` when the record's name would need mangling."""
    wanted = snake(record)
    if wanted.isidentifier() and wanted.isascii() and wanted not in scope.taken:
        candidate = Namer(set(scope.taken)).claim(wanted)
        if candidate == wanted:
            return scope.claim(wanted)
    return scope.claim("value")


def _strip(t: ir.Type) -> ir.Type:
    return t.inner if isinstance(t, ir.OptionalType) else t


def local_param(element: ir.Type, namer: Namer) -> str:
    scope = Namer(set(namer.taken))
    if isinstance(element, ir.RecordType):
        return _named_after(element.name, scope)
    return scope.claim("value")


def loop_targets(element: ir.Type, last_op: ir.Op | None, namer: Namer) -> list[str]:
    """Loop variables named after what they hold: `order`, `batch`, `i, order`, `key, order`."""
    scope = Namer(set(namer.taken))

    def one(t: ir.Type) -> str:
        if isinstance(t, ir.RecordType):
            return _named_after(t.name, scope)
        if isinstance(t, ir.ListType):
            return scope.claim("batch")
        if isinstance(t, ir.EventType):
            return scope.claim("event")
        return scope.claim("value")

    if isinstance(element, ir.TupleType):
        first = scope.claim("i" if isinstance(last_op, ir.Enumerate) else "key")
        return [first, *(one(t) for t in element.items[1:])]
    return [one(element)]


# ---------------------------------------------------------------------------------------------
# Rendering


@functools.cache
def _environment() -> jinja2.Environment:
    templates = resources.files("streamc.templates")
    return jinja2.Environment(
        loader=jinja2.FunctionLoader(lambda name: (templates / name).read_text("utf-8")),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )


def _render(template: str, **context: object) -> str:
    return _environment().get_template(template).render(**context)


def _black(source: str) -> str:
    return black.format_str(source, mode=BLACK_MODE)


# Below this many files a process pool costs more than it saves.
_PARALLEL_FROM = 64


def format_python(sources: dict[PurePosixPath, str]) -> dict[PurePosixPath, str]:
    """Every source through the pinned black; large packages on every core.

    black costs a few milliseconds per agent module, which dominates building a program of
    hundreds of agents; the modules are independent, so they are formatted in parallel.
    Forked workers inherit the imported black, so they start in milliseconds.
    """
    paths = list(sources)
    workers = min(os.cpu_count() or 1, 8)
    if len(paths) < _PARALLEL_FROM or workers < 2 or "fork" not in mp.get_all_start_methods():
        return {path: _black(sources[path]) for path in paths}
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as pool:
        chunk = max(1, len(paths) // (workers * 4))
        formatted = pool.map(_black, [sources[p] for p in paths], chunksize=chunk)
        return dict(zip(paths, formatted, strict=True))


def shape(program: ir.Program) -> PackageView:
    shaper = _Shaper(program)
    package = identifier(program.app).lower() + "_worker"
    modules = Namer({"__init__"})
    agents = tuple(shaper.agent(a, modules.claim(a.name)) for a in program.agents)
    states = tuple(shaper.state(t)[0] for t in program.tables if t.source is None)
    records = (*(shaper.record(r) for r in program.records), *states)
    record_annotations = [f.annotation for r in records for f in r.fields]
    topic_annotations = [shaper.annotation(t) for topic in program.topics
                         for t in (topic.key_type, topic.value_type)]  # fmt: skip
    runtime_names = {_window_call(t.window).partition("(")[0] for t in program.tables
                     if t.window is not None}  # fmt: skip
    if _uses_time(topic_annotations):
        runtime_names.add("Time")
    return PackageView(
        app=py_literal(program.app),
        app_title=doc_text(program.app),
        package=package,
        distribution=package.replace("_", "-"),
        runtime_requirement=RUNTIME_REQUIREMENT,
        source_name=doc_text(program.source_name),
        records=records,
        topics=tuple(shaper.topic(t) for t in program.topics),
        topic_imports=import_lines(
            ".records",
            sorted(
                set().union(
                    *(
                        shaper.records_in(t.key_type) | shaper.records_in(t.value_type)
                        for t in program.topics
                    ),
                    *(
                        shaper.records_in(t.value_type)
                        | ({shaper.state_names[t.name]} if t.source is None else set())
                        for t in program.tables
                    ),
                )
            ),
        ),
        agents=agents,
        hook_modules=tuple(shaper.hook_modules[m.module] for m in program.hook_modules),
        dlq_topic=doc_text(f"{program.app}-dlq"),
        helper_modules=tuple(h.module for h in program.helper_modules),
        tables=tuple(shaper.table(t) for t in program.tables),
        record_runtime_imports=("Record", "Time") if _uses_time(record_annotations)
        else ("Record",),
        topic_runtime_imports=import_lines("streamc_runtime", sorted(runtime_names)),
        # JSON strings are TOML basic strings (a marker may hold quotes).
        requires=tuple(json.dumps(r) for r in program.requires),
        # PEP 508 allows neither newlines nor backquotes: safe inside Markdown code spans.
        requires_doc=program.requires,
    )


def emit(program: ir.Program) -> dict[PurePosixPath, str]:
    """Every file of the worker package, keyed by its path inside the output folder."""
    view = shape(program)
    pkg = PurePosixPath(view.package)
    python: dict[PurePosixPath, str] = {
        pkg / "__init__.py": _render("__init__.py.jinja", p=view),
        pkg / "__main__.py": _render("__main__.py.jinja", p=view),
        pkg / "records.py": _render("records.py.jinja", p=view),
        pkg / "app.py": _render("app.py.jinja", p=view),
        pkg / "topics.py": _render("topics.py.jinja", p=view),
        pkg / "agents" / "__init__.py": _render("agents__init__.py.jinja", p=view),
        pkg / "hooks" / "__init__.py": _render("hooks__init__.py.jinja", p=view),
    }
    for agent in view.agents:
        python[pkg / "agents" / f"{agent.module}.py"] = _render("agent.py.jinja", p=view, a=agent)
    files = format_python(python)
    files[PurePosixPath("pyproject.toml")] = _render("pyproject.toml.jinja", p=view)
    files[PurePosixPath("README.md")] = _render("README.md.jinja", p=view)
    files[PurePosixPath("Dockerfile")] = _render("Dockerfile.jinja", p=view)
    files[pkg / "py.typed"] = ""
    for module, original in zip(view.hook_modules, program.hook_modules, strict=True):
        # User code is shipped verbatim: it is theirs, not ours to reformat.
        files[pkg / "hooks" / f"{module}.py"] = original.text
    for helper in program.helper_modules:
        # Imported by name (`import helpers`), so outside the package's namespace.
        files[pkg / "hooks" / "_local" / f"{helper.module}.py"] = helper.text
    return dict(sorted(files.items()))


# The operations a generated agent handles in one plain loop over each run of elements.
_FUSED = (ir.Process, ir.Filter, ir.Where, ir.Select, ir.Enumerate, ir.Echo, ir.To, ir.Sink)
# Operations after which an element's value is no longer its message's decoded value.
_CHANGES = (ir.Process, ir.Select, ir.Aggregate, ir.Join, ir.Take, ir.Enumerate, ir.Items,
            ir.Events)  # fmt: skip


class _Fused:
    """The loop a fused pipeline end becomes: `for order in run:`, then each operation in
    pipeline order as plain statements. Sync hooks are called directly; what a hook that is not
    proven sync returns is awaited only when it is awaitable; a hook's result is checked
    against its declared type by a check built once, at module level."""

    def __init__(self, shaper: _Shaper, agent: ir.Agent, cut: int, elements: list[ir.Type],
                 made_fn: dict[int, str], local: Namer) -> None:  # fmt: skip
        self.shaper = shaper
        self.agent = agent
        self.cut = cut
        self.elements = elements
        self.made_fn = made_fn
        self.local = local  # the module's names: checks are claimed there
        self.scope = Namer(set(local.taken) | {"stream", "topics", "app"})
        self.run = self.scope.claim("run")
        self.checks: list[str] = []  # module-level lines
        self.check_names: dict[str, str] = {}
        self.imports: list[str] = []
        self.counters: list[int] = []
        self.var_of: dict[str, str] = {}  # annotation -> the loop's variable of that type

    def _import(self, name: str) -> None:
        if name not in self.imports:
            self.imports.append(name)

    def _var(self, t: ir.Type) -> str:
        annotation = self.shaper.annotation(t)
        name = self.var_of.get(annotation)
        if name is None:
            base = _strip(t)
            if isinstance(base, ir.RecordType):
                name = _named_after(base.name, self.scope)
            elif isinstance(base, ir.ListType):
                name = self.scope.claim("batch")
            elif isinstance(base, ir.EventType):
                name = self.scope.claim("event")
            else:
                name = self.scope.claim("value")
            self.var_of[annotation] = name
        return name

    def _check(self, hook: str) -> str:
        name = self.check_names.get(hook)
        if name is None:
            declared = self.shaper.program.hook(hook).returns
            assert declared is not None
            name = self.check_names[hook] = self.local.claim(f"check_{hook}")
            self.scope.reserve(name)
            self.checks.append(f"{name} = result_check({self.shaper.annotation(declared)}, "
                               f"{py_literal(hook)})")  # fmt: skip
            self._import("result_check")
        return name

    def _call(self, hook: str, arg: str, result: str) -> list[str]:
        """`result = hook(arg)`, awaited if it must be, then checked."""
        called = self.shaper.program.hook(hook)
        fn = self.shaper.hook_names[hook]
        check = self._check(hook)
        if called.is_async and called.call_proven:
            return [*self._flush(), f"{result} = {check}(await {fn}({arg}))"]
        self._import("awaitable")
        return [f"{result} = {fn}({arg})", f"if awaitable({result}):",
                *(f"    {line}" for line in self._flush()), f"    {result} = await {result}",
                f"{result} = {check}({result})"]  # fmt: skip

    def _flush(self) -> list[str]:
        """Before the loop waits on a hook: what the run has done so far is sent and acked
        first, so a slow hook cannot hold back output or commits that are done."""
        return [f"await {self.run}.flush()"]

    def lines(self) -> tuple[str, ...]:
        agent, cut, run = self.agent, self.cut, self.run
        first = self.elements[cut]
        producer = agent.ops[cut - 1] if cut > 0 else None
        if isinstance(first, ir.TupleType) and isinstance(producer, ir.Items):
            current = loop_targets(first, producer, self.scope)
            self.scope.reserve(*current)
        elif isinstance(first, ir.TupleType):  # a join's pair: whole, as its functions take it
            current = [self.scope.claim("pair")]
        else:
            current = [self._var(first)]
        head = f"for {', '.join(current)} in {run}:"
        changed = False
        for op in reversed(agent.ops[:cut]):
            if isinstance(op, ir.GroupBy | ir.Through):
                break  # what comes back from the topic is its messages' decoded values
            changed = changed or isinstance(op, _CHANGES)
        body: list[str] = []
        keep: str | None = None

        def whole() -> str:
            return current[0] if len(current) == 1 else f"({', '.join(current)})"

        for index in range(cut, len(agent.ops)):
            op = agent.ops[index]
            match op:
                case ir.Process(hooks=hooks):
                    for hook in hooks:
                        declared = self.shaper.program.hook(hook).returns
                        assert declared is not None
                        result = self._var(declared)
                        body += self._call(hook, whole(), result)
                        current = [result]
                    changed = True
                case ir.Select(out=out):
                    result = self._var(out)
                    body.append(f"{result} = {self.made_fn[index]}({whole()})")
                    current = [result]
                    changed = True
                case ir.Where():
                    body += [f"if not {self.made_fn[index]}({whole()}):", "    continue"]
                case ir.Filter(hook=hook):
                    if keep is None:
                        keep = self.scope.claim("keep")
                    body += self._call(hook, whole(), keep)
                    body += [f"if not {keep}:", "    continue"]
                case ir.Enumerate(start=start):
                    number = self.scope.claim("i")
                    body.append(f"{number} = {run}.count({len(self.counters)})")
                    self.counters.append(start)
                    current = [number, whole()]
                    changed = True
                case ir.Echo() | ir.To() as sending:
                    targets = sending.topics if isinstance(sending, ir.Echo) else (sending.topic,)
                    raw = "" if changed else ", as_received=True"
                    # A send the element has steps with effects after (a hook, a number, a
                    # send, a sink) has its record's size checked at once: a record too large
                    # stops the element there. The last one's refusal can wait for the run.
                    later = any(not isinstance(after, ir.Where | ir.Select)
                                for after in agent.ops[index + 1 :])  # fmt: skip
                    for n, t in enumerate(targets):
                        more = ", more_steps=True" if later or n < len(targets) - 1 else ""
                        body.append(f"{run}.send(topics.{self.shaper.topic_attrs[t]}, "
                                    f"{whole()}{raw}{more})")  # fmt: skip
                case ir.Sink(hook=hook, unpack=unpack):
                    args = ", ".join(current) if unpack and len(current) > 1 else whole()
                    if unpack and len(current) == 1 and isinstance(self.elements[index],
                                                                   ir.TupleType):  # fmt: skip
                        args = f"*{current[0]}"  # a join's pair to a sink of two parameters
                    called = self.shaper.program.hook(hook)
                    fn = self.shaper.hook_names[hook]
                    if not called.call_proven:
                        self._import("sink")
                        body += [*self._flush(), f"await sink({fn}, {args})"]
                    elif called.is_async:
                        body += [*self._flush(), f"await {fn}({args})"]
                    else:
                        body.append(f"{fn}({args})")
        if not body:
            body = ["pass"]
        return (head, *(f"    {line}" for line in body))

