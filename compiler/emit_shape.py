"""Shaping the checked IR into the view model (`emit_views`): records, topics and tables,
an aggregate's state record and its fold, row and merge functions, and each agent's module
(its pipeline spelled as method calls, its fused end as a plain loop: `emit_fused`)."""

from __future__ import annotations

from . import ir
from .emit_expr import _Expression
from .emit_fused import _FUSED, _Fused
from .emit_layout import (
    _PLAIN_PATH,
    _camel,
    _record_name,
    _strip,
    _uses_time,
    _window_call,
    call_lines,
    import_lines,
    local_param,
    loop_layout,
    loop_targets,
)
from .emit_views import (
    AgentView,
    FieldView,
    FunctionView,
    HelperView,
    RecordView,
    TopicView,
)
from .naming import KEYWORDS, Namer, doc_text, py_literal, snake


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
