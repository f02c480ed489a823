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
    body: str


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
        self.record_names = {r.name: names.claim(r.name) for r in program.records}
        self.hook_names = {h.name: names.claim(h.name) for h in program.hooks}
        self.imported_names = frozenset(names.taken)
        topic_names = Namer(set(self.record_names.values()) | {"app"})
        self.topic_attrs = {t.name: topic_names.claim(t.name) for t in program.topics}
        module_names = Namer({"__init__"}, unsafe=KEYWORDS)
        self.hook_modules = {m.module: module_names.claim(m.module) for m in program.hook_modules}
        # A field may not shadow a name its class body uses later in an annotation or default.
        self.field_unsafe = (
            KEYWORDS
            | frozenset({"str", "int", "float", "bool", "bytes", "list", "None", "msgspec"})
            | frozenset(self.record_names.values())
        )

    # -- types ---------------------------------------------------------------------------

    def annotation(self, t: ir.Type) -> str:
        match t:
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
        return TopicView(
            comment=doc_text(comment),
            lines=call_lines(f"{self.topic_attrs[topic.name]} = app.topic", args),
        )

    # -- agents --------------------------------------------------------------------------

    def agent(self, agent: ir.Agent, module: str) -> AgentView:
        local = Namer(set(self.imported_names))
        function = local.claim(agent.name)
        helpers: list[HelperView] = []
        chain: list[str] = []
        used_hooks: set[str] = set()
        types_seen: list[ir.Type] = [agent.input]
        element = agent.input
        sink: ir.Sink | None = None

        def returns(hook: str) -> str:
            """The hook's declared result type, which the runtime checks every result against."""
            declared = self.program.hook(hook).returns
            assert declared is not None
            types_seen.append(declared)
            return self.annotation(declared)

        for op in agent.ops:
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
                case ir.Where(expr=expr, text=text):
                    param = local_param(element, local)
                    name = local.claim(f"{agent.name}_where")
                    helpers.append(
                        HelperView(
                            name=name,
                            param=param,
                            param_type=self.annotation(element),
                            returns="bool",
                            doc=doc_text(f"where {text}"),
                            expression=self.expression(expr, param, element),
                        )
                    )
                    chain.append(f"filter({name})")
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
            element = op.out
            types_seen.append(element)

        producer = next((op for op in reversed(agent.ops) if not isinstance(op, ir.Sink)), None)
        target_names = loop_targets(element, producer, local)
        target = ", ".join(target_names)
        runtime_imports = ["Stream"]
        if sink is None:
            body = "pass"
        else:
            # A tuple goes to a one-parameter sink whole, to a sink of as many parameters in
            # pieces.
            args = target if sink.unpack or len(target_names) == 1 else f"({target})"
            called = self.program.hook(sink.hook)
            fn = self.hook_names[sink.hook]
            if not called.call_proven:
                body = f"await sink({fn}, {args})"
                runtime_imports.append("sink")
            elif called.is_async:
                body = f"await {fn}({args})"
            else:
                body = f"{fn}({args})"

        hook_imports: dict[str, list[str]] = {}
        for hook_name in sorted(used_hooks):
            alias = self.hook_names[hook_name]
            spelled = hook_name if alias == hook_name else f"{hook_name} as {alias}"
            hook_module = self.hook_modules[self.program.hook(hook_name).module]
            hook_imports.setdefault(hook_module, []).append(spelled)

        records: set[str] = set()
        for t in types_seen:
            records |= self.records_in(t)
        annotations = " ".join(self.annotation(t) for t in types_seen)
        if "Event[" in annotations:
            runtime_imports.insert(0, "Event")
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
        )

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
        return _Expression(self, param, element).render(expr)


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

    def __init__(self, shaper: _Shaper, param: str, element: ir.Type) -> None:
        self.shaper = shaper
        self.param = param
        self.element = element

    def render(self, expr: ir.Expr) -> str:
        return self._render(expr)[0]

    def _render(self, expr: ir.Expr) -> tuple[str, int]:
        match expr:
            case ir.FieldRef(path=path):
                return self.shaper.field_path(self.param, path, self.element), _ATOM
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


def _named_after(record: str, scope: Namer) -> str:
    """`order` for an Order; `value` when the record's name would need mangling."""
    wanted = snake(record)
    if wanted.isidentifier() and wanted.isascii() and wanted not in scope.taken:
        candidate = Namer(set(scope.taken)).claim(wanted)
        if candidate == wanted:
            return scope.claim(wanted)
    return scope.claim("value")


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
    return PackageView(
        app=py_literal(program.app),
        app_title=doc_text(program.app),
        package=package,
        distribution=package.replace("_", "-"),
        runtime_requirement=RUNTIME_REQUIREMENT,
        source_name=doc_text(program.source_name),
        records=tuple(shaper.record(r) for r in program.records),
        topics=tuple(shaper.topic(t) for t in program.topics),
        topic_imports=import_lines(
            ".records",
            sorted(
                set().union(
                    *(
                        shaper.records_in(t.key_type) | shaper.records_in(t.value_type)
                        for t in program.topics
                    )
                )
            ),
        ),
        agents=agents,
        hook_modules=tuple(shaper.hook_modules[m.module] for m in program.hook_modules),
        dlq_topic=doc_text(f"{program.app}-dlq"),
        helper_modules=tuple(h.module for h in program.helper_modules),
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
