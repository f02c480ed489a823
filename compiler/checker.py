"""`ast.Module` to `ir.Program`: name resolution and the type rules of the language.

The checker is pure (the loader hands it the hook modules' text) and never stops at the first
problem: every rule appends to one list of diagnostics and carries on with a best guess, so a
file with five mistakes gets five messages. Where a mistake makes a type unknowable (an unknown
record, a hook that does not exist) the type becomes `None` and later rules that need it stay
quiet instead of piling up consequences of the same error.

The rules, in the order a pipeline meets them, are documented in docs/language.md.
"""

from __future__ import annotations

import ast as pyast
import dataclasses
import posixpath
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Literal, TypeVar, cast

from . import ast, check_hooks, check_join, check_state, check_time, ir
from .check_topology import (
    KAFKA_NAME_RULE,
    MAX_PARTITIONS,
    check_topology,
    kafka_name_problem,
    positions_topics,
)
from .diagnostics import Diagnostic, Note, Span, closest, did_you_mean
from .gcpause import gc_paused

PRIMITIVES: dict[str, ir.PrimType] = {
    "str": ir.STR, "int": ir.INT, "float": ir.FLOAT, "bool": ir.BOOL, "bytes": ir.BYTES,
    "time": ir.TIME,
}  # fmt: skip
BUILTIN_TYPE_NAMES = (*PRIMITIVES, "list", "Event", "any")
KEY_TYPES = (ir.STR, ir.INT, ir.BYTES)
IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
NUMERIC = (ir.INT, ir.FLOAT)


def hooks_display_path(sdl_filename: str, hooks_path: str) -> str:
    """The name diagnostics use for a hooks module: its path next to the .sdl as given."""
    folder = posixpath.dirname(sdl_filename.replace("\\", "/"))
    return posixpath.join(folder, hooks_path) if folder else hooks_path


RefKind = Literal["record", "topic", "hook", "field"]
# The parts of an element an expression sees, each with its name (None: unnamed): the element
# itself, and after a join the row it found.
Scope = tuple[tuple[str | None, ir.Type], ...]


@dataclass(frozen=True, slots=True)
class OpTypes:
    """What flows into and out of one operation; None where an error made a type unknown."""

    elem_in: ir.Type | None
    key_in: ir.Type | None
    elem_out: ir.Type | None
    key_out: ir.Type | None


@dataclass(frozen=True)
class Facts:
    """What the checker learnt about the source, for editors (`check(..., facts=True)`).

    `ops` maps each operation's span to the types around it, also after errors elsewhere;
    `refs` holds every name the checker resolved: where it was written, what kind of thing it
    names and which one (a field as (record, field)); `topics` the declared topics, resolved.
    """

    ops: Mapping[Span, OpTypes]
    refs: tuple[tuple[Span, RefKind, tuple[str, ...]], ...]
    topics: Mapping[str, ir.Topic]


@dataclass(frozen=True)
class CheckResult:
    """The program when there is no error, and every diagnostic (errors and warnings)."""

    program: ir.Program | None
    diagnostics: tuple[Diagnostic, ...]  # sorted by place
    facts: Facts | None = None  # only when asked for

    @property
    def errors(self) -> tuple[Diagnostic, ...]:
        return tuple(d for d in self.diagnostics if d.severity == "error")


def check(
    module: ast.Module,
    hook_sources: Mapping[str, str | None],
    hook_errors: Mapping[str, str] | None = None,
    facts: bool = False,
) -> CheckResult:
    """Check a parsed module. `hook_sources` maps each hooks path as written to its text.

    `hook_errors` may say why a module could not be read (the loader passes the reason);
    it only improves the message. Warnings about the topology come only for a program
    without errors: an error can leave the topology half built. `facts`: also say what was
    learnt about each name and operation (for the language server; it costs memory).
    """
    checker = _Checker(module, hook_sources, hook_errors or {})
    if facts:
        checker.op_types, checker.refs = {}, []
    with gc_paused():
        program = checker.run()
    learnt = None
    if facts:
        assert checker.op_types is not None and checker.refs is not None
        learnt = Facts(checker.op_types, tuple(checker.refs),
                       {name: info.topic for name, info in checker.topics.items()})  # fmt: skip
    if checker.diagnostics:
        diagnostics = tuple(sorted(set(checker.diagnostics), key=Diagnostic.sort_key))
        return CheckResult(None, diagnostics, learnt)
    assert program is not None
    with gc_paused():  # the whole-program rules walk the same millions of objects again
        warnings = check_topology(module, program) + check_state.unfilled_tables(checker)
    return CheckResult(program, tuple(sorted(set(warnings), key=Diagnostic.sort_key)), learnt)


@dataclass
class _Stream:
    """What flows at one point of a pipeline. `None` types are unknown after an error."""

    elem: ir.Type | None
    key: ir.Type | None
    topic: str  # the name of the current topic, for repartition topic names
    partitions: int
    mode: str = "stream"  # "stream", "items", "events", or "done" after `to`/`sink`
    mode_op: str = ""  # the operation that set the mode, for messages
    inputs: tuple[int, ...] = ()  # the partition counts of the topics the current step reads
    # The names of the element's parts for `where`/`select`: (the `as` name,) or, after a
    # join, (the element's name, the row's name); () when nothing is named. Names hold while
    # the element keeps its type.
    names: tuple[str | None, ...] = ()
    joined: bool = False  # the element is the (element, row) pair of a join


@dataclass
class _HookInfo:
    sig: ast.HookSig
    module: str
    params: tuple[ir.Type | None, ...]
    returns: ir.Type | None
    has_return: bool
    is_async: bool = False
    call_proven: bool = False  # see ir.Hook


@dataclass(slots=True)  # one per repartition topic: tens of thousands in a big program
class _TopicInfo:
    topic: ir.Topic
    span: Span | None
    first_use: str = ""  # for implicit topics: where they were first named


_T = TypeVar("_T")


@dataclass
class _Checker:
    module: ast.Module
    hook_sources: Mapping[str, str | None]
    hook_errors: Mapping[str, str]
    diagnostics: list[Diagnostic] = field(default_factory=list)
    app: str = ""
    records: dict[str, ast.RecordDecl] = field(default_factory=dict)
    record_fields: dict[str, dict[str, ir.Field]] = field(default_factory=dict)
    field_spans: dict[tuple[str, str], Span] = field(default_factory=dict)
    broken_fields: set[tuple[str, str]] = field(
        default_factory=set
    )  # their type is unknown
    topics: dict[str, _TopicInfo] = field(default_factory=dict)  # by source name
    implicit: dict[str, _TopicInfo] = field(default_factory=dict)
    repartition: dict[str, _TopicInfo] = field(default_factory=dict)
    # Kafka name -> what uses it, for E208: text, or (prefix, name) joined only when reported,
    # since a big program has a repartition topic per agent and the joined text is never read.
    kafka_names: dict[str, str | tuple[str, str]] = field(default_factory=dict)
    hooks: dict[str, _HookInfo] = field(default_factory=dict)
    hook_modules: list[ir.HookModule] = field(default_factory=list)
    # hook functions whose name their module binds again after the `def` (`f = retry(f)`)
    rebound_defs: set[pyast.AST] = field(default_factory=set)
    hook_module_spans: dict[str, Span] = field(default_factory=dict)
    hook_scopes: dict[str, tuple[check_hooks.Scope, list[str], str]] = field(
        default_factory=dict
    )  # by hooks path: what its names are bound to, its lines, its name as shown
    kafka_spans: dict[str, Span] = field(default_factory=dict)  # where each name is claimed
    tables: dict[str, check_state.TableInfo] = field(default_factory=dict)  # by name
    by_kafka_name: dict[str, _TopicInfo] | None = None  # see declared_by_kafka_name
    # One copy of each equal immutable IR part that agents repeat (field references, source
    # lists, types, constants): 100,000 agents reading `amount` need not hold 100,000 equal
    # objects. (Not float constants: 0.0 == -0.0, yet they are written differently.)
    shared: dict[object, object] = field(default_factory=dict)
    checked_where: dict[tuple[str, ir.Type, tuple[str | None, ...]], ir.Expr] = field(
        default_factory=dict
    )
    # Only when `check` is asked for facts: None keeps a plain check from paying for them.
    op_types: dict[Span, OpTypes] | None = None
    refs: list[tuple[Span, RefKind, tuple[str, ...]]] | None = None

    def resolved(self, span: Span, kind: RefKind, *key: str) -> None:
        """Remember that the name at `span` refers to this record, topic, hook or field."""
        if self.refs is not None:
            self.refs.append((span, kind, key))

    def share(self, value: _T) -> _T:
        return self.shared.setdefault(value, value)  # type: ignore[return-value]

    # ---- reporting

    def error(self, span: Span | None, code: str, message: str, hints: Iterable[str] = (),
              file: str | None = None, notes: Iterable[Note] = ()) -> None:  # fmt: skip
        self.diagnostics.append(
            Diagnostic.error(file or self.module.filename, span, code, message, hints, notes)
        )

    def first_here(self, span: Span | None, what: str, verb: str = "defined") -> tuple[Note, ...]:
        """The note of a duplicate: where the name was first defined (or used)."""
        if span is None:
            return ()
        return (Note.at(self.module.filename, span, f"{what} is first {verb} here"),)

    def line_of(self, span: Span) -> str:
        return f"line {span.line}"

    # ---- the whole program

    def run(self) -> ir.Program | None:
        decls = self.module.decls
        self.check_app([d for d in decls if isinstance(d, ast.AppDecl)])
        record_decls = [d for d in decls if isinstance(d, ast.RecordDecl)]
        self.collect_records(record_decls)
        records = self.check_records(record_decls)
        for decl in decls:
            if isinstance(decl, ast.TopicDecl):
                self.check_topic(decl)
        for decl in decls:
            if isinstance(decl, ast.TableDecl):
                check_join.check_table(self, decl)
        dlq = f"{self.app}-dlq"
        self.kafka_names[dlq] = "<dead-letter topic>"
        apps = [d for d in decls if isinstance(d, ast.AppDecl)]
        self.check_kafka_name(dlq, apps[0].name.span if apps else None,
                              "the dead-letter topic", "shorten the app name")  # fmt: skip
        for decl in decls:
            if isinstance(decl, ast.HooksDecl):
                self.check_hooks(decl)
        requires = self.check_requires([d for d in decls if isinstance(d, ast.RequiresDecl)])
        agents: list[ir.Agent] = []
        seen_agents: dict[str, Span] = {}
        for decl in decls:
            if isinstance(decl, ast.AgentDecl):
                name = decl.name.text
                if name in seen_agents:
                    self.error(
                        decl.name.span,
                        "E207",
                        f"agent '{name}' is already declared",
                        notes=self.first_here(seen_agents[name], f"agent '{name}'"),
                    )
                else:
                    seen_agents[name] = decl.name.span
                agent = self.check_agent(decl)
                if agent is not None:
                    agents.append(agent)
        if self.diagnostics:
            return None
        topics = [t.topic for t in self.topics.values()]
        topics += [t.topic for t in self.implicit.values()]
        topics += [t.topic for t in self.repartition.values()]
        tables = tuple(t.table for t in self.tables.values() if t.table is not None)
        agents_ir = tuple(agents)
        marked = positions_topics(topics, agents_ir)
        topics = [dataclasses.replace(t, positions=True) if t.name in marked else t
                  for t in topics]  # fmt: skip
        hooks = tuple(
            ir.Hook(
                name,
                h.module,
                tuple(p for p in h.params if p is not None),
                h.returns,
                h.is_async,
                h.call_proven,
            )
            for name, h in self.hooks.items()
        )
        return ir.Program(
            app=self.app,
            source_name=_source_name(self.module.filename),
            records=records,
            topics=tuple(topics),
            hook_modules=tuple(self.hook_modules),
            hooks=hooks,
            agents=agents_ir,
            tables=tables,
            requires=requires,
        )

    def check_requires(self, decls: list[ast.RequiresDecl]) -> tuple[str, ...]:
        """Each requirement valid under PEP 508 (as pip reads it), each package once, and not
        the runtime, which the build pins itself."""
        if not decls:
            return ()
        # Imported only for a program that has requirements: most do not, and `check` is fast.
        from packaging.requirements import InvalidRequirement, Requirement
        from packaging.utils import canonicalize_name

        out: list[str] = []
        seen: dict[str, tuple[Span, str]] = {}
        for decl in decls:
            for lit in decl.requirements:
                try:
                    req = Requirement(lit.value)
                except InvalidRequirement as exc:
                    self.error(
                        lit.span,
                        "E220",
                        f"invalid Python requirement {lit.value!r}: {_first_line(exc)}",
                        ['a PEP 508 requirement, such as "httpx>=0.27" or "pyyaml"'],
                    )
                    continue
                name = canonicalize_name(req.name)
                if name in ("streamc-runtime", "streamc"):
                    self.error(
                        lit.span,
                        "E220",
                        f"'{req.name}' cannot be required: the build pins the runtime itself",
                    )
                elif name in seen:
                    first, first_name = seen[name]
                    self.error(
                        lit.span,
                        "E220",
                        f"package '{req.name}' is required twice",
                        ["merge the version constraints into one requirement"],
                        notes=self.first_here(first, f"package '{first_name}'", "required"),
                    )
                else:
                    seen[name] = (lit.span, req.name)
                    out.append(str(req))
        return tuple(out)

    def check_app(self, apps: list[ast.AppDecl]) -> None:
        for extra in apps[1:]:
            self.error(
                extra.span,
                "E209",
                "the app name is declared twice",
                notes=self.first_here(apps[0].span, "the app name", "declared"),
            )
        if apps:
            self.app = apps[0].name.text
            return
        stem = PurePosixPath(self.module.filename.replace("\\", "/")).stem
        self.app = stem
        if not IDENT_RE.match(stem):
            self.app = "app"
            self.error(
                None,
                "E209",
                f"the file name '{stem}' cannot name the app: it is not an identifier",
                ["declare the name at the top of the file, such as `app orders`"],
            )

    # ---- records

    def collect_records(self, decls: list[ast.RecordDecl]) -> None:
        for decl in decls:
            name = decl.name.text
            if name in BUILTIN_TYPE_NAMES:
                self.error(
                    decl.name.span,
                    "E207",
                    f"'{name}' is a built-in type and cannot name a record",
                )
            elif name in self.records:
                self.error(
                    decl.name.span,
                    "E207",
                    f"record '{name}' is already declared",
                    notes=self.first_here(self.records[name].name.span, f"record '{name}'"),
                )
            else:
                self.records[name] = decl

    def check_records(self, decls: list[ast.RecordDecl]) -> tuple[ir.Record, ...]:
        built: dict[str, ir.Record] = {}
        for decl in decls:
            if self.records.get(decl.name.text) is not decl:
                continue
            fields: dict[str, ir.Field] = {}
            seen: dict[str, Span] = {}
            for f in decl.fields:
                if f.name.text in seen:
                    self.error(
                        f.name.span,
                        "E207",
                        f"record {decl.name.text} already has a field '{f.name.text}'",
                        notes=self.first_here(seen[f.name.text], f"field '{f.name.text}'"),
                    )
                    continue
                seen[f.name.text] = f.name.span
                ftype = self.resolve_type(f.type, "field")
                default = None
                if f.default is not None and ftype is not None:
                    default = self.check_default(f, ftype)
                if ftype is not None:
                    fields[f.name.text] = ir.Field(f.name.text, ftype, default)
                    self.field_spans[(decl.name.text, f.name.text)] = f.type.span
                else:
                    self.broken_fields.add((decl.name.text, f.name.text))
            self.record_fields[decl.name.text] = fields
            built[decl.name.text] = ir.Record(decl.name.text, tuple(fields.values()))
        return self.order_records(built)

    def order_records(self, built: dict[str, ir.Record]) -> tuple[ir.Record, ...]:
        """Nested records first (a depth-first post-order), reporting any nesting cycle."""
        order: list[ir.Record] = []
        state: dict[str, int] = {}  # 1: being visited, 2: done

        def nested(t: ir.Type) -> list[str]:
            if isinstance(t, ir.RecordType):
                return [t.name]
            if isinstance(t, ir.ListType):
                return nested(t.item)
            if isinstance(t, ir.OptionalType):
                return nested(t.inner)
            return []

        def visit(root: str) -> None:
            # Depth-first post-order with an explicit stack: a chain of thousands of nested
            # records must not hit Python's recursion limit.
            if state.get(root) == 2 or root not in built:
                return
            state[root] = 1
            path = [root]
            stack = [
                iter(
                    [(f, inner) for f in built[root].fields for inner in nested(f.type)]
                )
            ]
            while stack:
                step = next(stack[-1], None)
                if step is None:
                    stack.pop()
                    done = path.pop()
                    state[done] = 2
                    order.append(built[done])
                    continue
                f, inner = step
                name = path[-1]
                if state.get(inner) == 1:
                    cycle = " -> ".join([*path[path.index(inner) :], inner])
                    self.error(self.field_spans[(name, f.name)], "E313",
                               f"record {name} contains itself through field '{f.name}'",
                               [f"the records nest in a cycle: {cycle}",
                                "a record cannot contain itself, not even through an "
                                "optional field or a list"])  # fmt: skip
                elif state.get(inner) != 2 and inner in built:
                    state[inner] = 1
                    path.append(inner)
                    stack.append(iter([(g, x) for g in built[inner].fields
                                       for x in nested(g.type)]))  # fmt: skip

        for name in built:
            visit(name)
        return tuple(order)

    def check_default(self, f: ast.FieldDecl, ftype: ir.Type) -> ir.Default | None:
        d = f.default
        if isinstance(d, ast.ListLit):
            base = ftype.inner if isinstance(ftype, ir.OptionalType) else ftype
            if not isinstance(base, ir.ListType):
                self.bad_default(d.span, ftype, "a list")
                return None
            values: list[ir.Scalar] = []
            for item in d.items:
                v = self.literal_value(item, base.item)
                if isinstance(v, _Bad):
                    self.error(
                        item.span,
                        "E312",
                        f"an item of the default does not match the field's type {ftype}",
                        [f"expected {base.item}, found {_lit_type_name(item)}"],
                    )
                    return None
                values.append(v)
            return ir.Default(tuple(values))
        assert d is not None
        v = self.literal_value(d, ftype)
        if isinstance(v, _Bad):
            self.bad_default(d.span, ftype, _lit_type_name(d))
            return None
        return ir.Default(v)

    def literal_value(self, lit: ast.Literal, t: ir.Type) -> ir.Scalar | _Bad:
        if isinstance(lit, ast.NullLit):
            return None if isinstance(t, ir.OptionalType) else _BAD
        base = t.inner if isinstance(t, ir.OptionalType) else t
        if isinstance(lit, ast.BoolLit):
            return lit.value if base == ir.BOOL else _BAD
        if isinstance(lit, ast.IntLit):
            if base == ir.INT:
                return lit.value
            return float(lit.value) if base == ir.FLOAT else _BAD
        if isinstance(lit, ast.FloatLit):
            return lit.value if base == ir.FLOAT else _BAD
        return lit.value if base == ir.STR else _BAD

    def bad_default(self, span: Span, expected: ir.Type, found: str) -> None:
        self.error(
            span,
            "E312",
            f"the default does not match the field's type {expected}",
            [f"expected {expected}, found {found}"],
        )

    # ---- types

    def resolve_type(self, t: ast.TypeExpr, where: str) -> ir.Type | None:
        """Resolve a type expression. `where`: "field", "topic", "key", "param" or "return"."""
        if isinstance(t, ast.TupleTypeExpr):
            if where not in ("param", "return"):
                self.error(
                    t.span,
                    "E314",
                    f"a tuple type cannot be used as a {_WHERE[where]}",
                    ["tuples only appear as hook parameters, after enumerate or items"],
                )
                return None
            items = [self.resolve_type(i, "inner") for i in t.items]
            if any(i is None for i in items):
                return None
            result: ir.Type = ir.TupleType(tuple(i for i in items if i is not None))
            return ir.OptionalType(result) if t.optional else result
        name = t.name.text
        inner_where = "inner-" + where if not where.startswith("inner") else where
        resolved: ir.Type | None
        if name in ("list", "Event"):
            want = 1 if name == "list" else 2
            if len(t.args) != want:
                self.error(
                    t.span,
                    "E315",
                    f"{name} takes {want} type argument{'s' if want > 1 else ''}, "
                    f"found {len(t.args)}",
                    ["write list[T]" if name == "list" else "write Event[K, V]"],
                )
                return None
            if name == "Event" and where not in ("param", "inner-param"):
                self.error(
                    t.span,
                    "E314",
                    f"Event cannot be used as a {_WHERE[where]}",
                    ["Event[K, V] is only a hook parameter, after `events`"],
                )
                return None
            args = [self.resolve_type(a, inner_where) for a in t.args]
            if any(a is None for a in args):
                return None
            first, last = args[0], args[-1]
            assert first is not None and last is not None
            resolved = (
                ir.ListType(first) if name == "list" else ir.EventType(first, last)
            )
        elif t.args and (name in PRIMITIVES or name == "any" or name in self.records):
            self.error(t.span, "E315", f"{name} takes no type arguments")
            return None
        elif name in PRIMITIVES:
            resolved = PRIMITIVES[name]
        elif name == "any":
            if where not in ("param", "inner-param"):
                self.error(
                    t.span,
                    "E314",
                    f"any cannot be used as a {_WHERE[where]}",
                    ["any is only a hook parameter type: the hook accepts anything"],
                )
                return None
            resolved = ir.AnyType()
        elif name in self.records:
            self.resolved(t.name.span, "record", name)
            resolved = ir.RecordType(name)
        else:
            self.error(
                t.name.span,
                "E202",
                f"unknown type '{name}'",
                # `lst[str]` is a misspelt generic type, whatever else it is close to.
                (t.args and did_you_mean(name, ["list", "Event"]))
                or did_you_mean(name, [*self.records, *BUILTIN_TYPE_NAMES]),
            )
            return None
        if t.optional:
            if isinstance(
                resolved, ir.OptionalType
            ):  # pragma: no cover - grammar has one ?
                return resolved
            return ir.OptionalType(resolved)
        return resolved

    # ---- topics

    def check_topic(self, decl: ast.TopicDecl) -> None:
        name = decl.name.text
        value_type: ir.Type | None = ir.BYTES
        if decl.value_type is not None:
            value_type = self.resolve_type(decl.value_type, "topic")
        key_type: ir.Type | None = ir.BYTES
        partitions = 1
        kafka_name = name
        kafka_span = decl.name.span
        seen: dict[type, Span] = {}
        timestamp: str | None = None
        for opt in decl.options:
            word = {ast.TopicKey: "key", ast.TopicPartitions: "partitions",
                    ast.TopicKafkaName: "name",
                    ast.TopicTimestamp: "timestamp",
                    ast.TopicCompacted: "compacted"}[type(opt)]  # fmt: skip
            if type(opt) in seen:
                note = self.first_here(seen[type(opt)], f"'{word}'", "given")
                self.error(opt.span, "E207", f"topic {name} gives '{word}' twice", notes=note)
                continue
            seen[type(opt)] = opt.span
            if isinstance(opt, ast.TopicKey):
                key_type = self.resolve_type(opt.type, "key")
                if key_type is not None and key_type not in KEY_TYPES:
                    self.error(
                        opt.type.span,
                        "E303",
                        f"a topic key cannot be {key_type}",
                        ["keys are str, int or bytes"],
                    )
                    key_type = None
            elif isinstance(opt, ast.TopicPartitions):
                if opt.count.value < 1:
                    self.error(
                        opt.count.span,
                        "E306",
                        f"a topic needs at least 1 partition, found {opt.count.value}",
                    )
                elif opt.count.value > MAX_PARTITIONS:
                    self.error(
                        opt.count.span,
                        "E306",
                        f"a topic has at most {MAX_PARTITIONS:,} partitions, found "
                        f"{opt.count.value:,}",
                    )
                partitions = min(max(opt.count.value, 1), MAX_PARTITIONS)
            elif isinstance(opt, ast.TopicTimestamp):
                timestamp = check_time.check_timestamp(self, name, opt, value_type)
            elif isinstance(opt, ast.TopicCompacted):
                pass
            else:
                kafka_name, kafka_span = opt.name.value, opt.name.span
        self.check_kafka_name(kafka_name, kafka_span)
        if name in self.topics:
            first = self.topics[name].span
            self.error(
                decl.name.span,
                "E207",
                f"topic '{name}' is already declared",
                notes=self.first_here(first, f"topic '{name}'"),
            )
            return
        self.claim_kafka_name(kafka_name, name, kafka_span)
        topic = ir.Topic(name, kafka_name, key_type or ir.BYTES, value_type or ir.BYTES,
                         partitions, "declared", timestamp_field=timestamp,
                         compacted=ast.TopicCompacted in seen)  # fmt: skip
        info = _TopicInfo(topic, decl.name.span)
        if key_type is None or value_type is None:
            info.first_use = (
                "broken"  # its types are unknown: stay quiet about them later
            )
        self.topics[name] = info

    def check_kafka_name(self, kafka_name: str, span: Span | None, made: str = "",
                         remedy: str = "") -> bool:  # fmt: skip
        """Whether `kafka_name` may name a topic; `made` says which name streamc made."""
        problem = kafka_name_problem(kafka_name)
        if problem is None:
            return True
        if made:
            message = f"{made} would be named '{kafka_name}', which is {problem}"
        else:
            message = f"'{kafka_name}' is not a valid Kafka topic name"
        self.error(span, "E210", message, [KAFKA_NAME_RULE, *([remedy] if remedy else [])])
        return False

    def owner_of(self, kafka_name: str) -> str:
        owner = self.kafka_names[kafka_name]
        return owner if isinstance(owner, str) else owner[0] + owner[1]

    def claim_kafka_name(self, kafka_name: str, owner: str, span: Span) -> None:
        if kafka_name in self.kafka_names:
            other = self.owner_of(kafka_name)
            note = self.first_here(self.kafka_spans.get(kafka_name),
                                   f"Kafka topic '{kafka_name}'", "used")  # fmt: skip
            self.error(span, "E208", f"Kafka topic '{kafka_name}' is already used by {other}",
                       notes=note)  # fmt: skip
            return
        self.kafka_names[kafka_name] = f"topic {owner}"
        self.kafka_spans[kafka_name] = span

    # ---- hooks

    def check_hooks(self, decl: ast.HooksDecl) -> None:
        path = decl.path.value
        pure = PurePosixPath(path.replace("\\", "/"))
        if not path.endswith(".py") or pure.is_absolute() or not path.strip():
            self.error(
                decl.path.span,
                "E211",
                f"hooks module '{path}' must be a relative path to a .py file",
                ['such as "hooks.py", relative to the folder of the .sdl file'],
            )
            module = None
        elif not IDENT_RE.match(pure.stem):
            self.error(
                decl.path.span,
                "E211",
                f"hooks module '{path}' cannot be imported: '{pure.stem}' is not a "
                "Python identifier",
                ["rename the file, such as my_hooks.py"],
            )
            module = None
        else:
            module = pure.stem
            if module in self.hook_module_spans:
                self.error(
                    decl.path.span,
                    "E207",
                    f"a hooks module named '{module}' is already declared",
                    notes=self.first_here(self.hook_module_spans[module],
                                          f"hooks module '{module}'"),
                )  # fmt: skip
                module = None
            else:
                self.hook_module_spans[module] = decl.path.span
        functions: dict[str, pyast.FunctionDef | pyast.AsyncFunctionDef] | None = None
        imported: set[str] = set()
        if module is not None:
            text = self.hook_sources.get(path)
            display = hooks_display_path(self.module.filename, path)
            if text is None:
                reason = self.hook_errors.get(path)
                self.error(decl.path.span, "E206", f"cannot read hooks module '{display}'",
                           [reason] if reason else [])  # fmt: skip
            else:
                functions, imported = self.read_hooks_module(text, display)
                if functions is not None:
                    self.hook_modules.append(ir.HookModule(module, path, text))
        for sig in decl.hooks:
            self.check_hook_sig(sig, module or "", functions, imported, path)

    def read_hooks_module(
        self, text: str, display: str
    ) -> tuple[dict[str, pyast.FunctionDef | pyast.AsyncFunctionDef] | None, set[str]]:
        """The module's top-level functions, read without importing (running) user code."""
        try:
            tree = pyast.parse(text, filename=display)
        except SyntaxError as e:
            line = e.lineno or 0
            col = e.offset or 1
            span = Span(line, col, line, col + 1, 0, 0) if line else None
            self.error(
                span, "E206", f"hooks module is not valid Python: {e.msg}", file=display
            )
            return None, set()
        except (ValueError, RecursionError, MemoryError) as e:
            self.error(None, "E206", f"hooks module cannot be parsed: {type(e).__name__}",
                       file=display)  # fmt: skip
            return None, set()
        functions: dict[str, pyast.FunctionDef | pyast.AsyncFunctionDef] = {}
        imported: set[str] = set()
        scope = check_hooks.Scope.of(tree, self.records)
        self.hook_scopes[display] = (scope, text.split("\n"), display)
        for node in tree.body:
            if isinstance(node, pyast.FunctionDef | pyast.AsyncFunctionDef):
                functions[node.name] = node
            elif isinstance(node, pyast.Import | pyast.ImportFrom):
                imported.update((a.asname or a.name).split(".")[0] for a in node.names)
        self.rebound_defs.update(_rebound_defs(tree, functions))
        return functions, imported

    def check_hook_sig(
        self,
        sig: ast.HookSig,
        module: str,
        functions: Mapping[str, pyast.FunctionDef | pyast.AsyncFunctionDef] | None,
        imported: set[str],
        path: str,
    ) -> None:
        name = sig.name.text
        params = tuple(self.resolve_type(p, "param") for p in sig.params)
        returns = (
            self.resolve_type(sig.returns, "return")
            if sig.returns is not None
            else None
        )
        if name in self.hooks:
            first = self.hooks[name].sig.name.span
            self.error(
                sig.name.span,
                "E207",
                f"hook '{name}' is already declared",
                notes=self.first_here(first, f"hook '{name}'"),
            )
            return
        info = _HookInfo(sig, module, params, returns, sig.returns is not None)
        self.hooks[name] = info
        if functions is None:
            return
        fn = functions.get(name)
        if fn is None:
            hints = list(did_you_mean(name, functions))
            if name in imported:
                hints.append(
                    f"'{name}' is imported there; streamc needs a `def` or `async def` "
                    "in the module itself to read its signature"
                )
            self.error(sig.name.span, "E205", f"{path} has no function '{name}'", hints)
            return
        info.is_async = isinstance(fn, pyast.AsyncFunctionDef)
        info.call_proven = fn not in self.rebound_defs and _call_proven(fn)
        args = fn.args
        positional = [*args.posonlyargs, *args.args]
        required = len(positional) - len(args.defaults)
        most = None if args.vararg is not None else len(positional)
        n = len(sig.params)
        kw_required = [a.arg for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True)
                       if d is None]  # fmt: skip
        if kw_required:
            self.error(
                sig.span,
                "E307",
                f"function '{name}' in {path} has a required keyword-only parameter "
                f"'{kw_required[0]}'",
                ["streamc passes arguments by position"],
            )
        elif n < required or (most is not None and n > most):
            takes = (
                str(required)
                if most == required
                else (
                    f"{required} or more" if most is None else f"{required} to {most}"
                )
            )
            self.error(sig.span, "E307",
                       f"hook '{name}' is declared with {_n(n, 'parameter')}, but the "
                       f"function in {path} takes {takes}")  # fmt: skip
        elif None not in info.params and (info.returns is not None or not info.has_return):
            self.check_annotations(info, fn, path)  # (unknown types are reported already)

    def check_annotations(self, info: _HookInfo,
                          fn: pyast.FunctionDef | pyast.AsyncFunctionDef, path: str) -> None:
        scope, lines, display = self.hook_scopes[hooks_display_path(self.module.filename, path)]
        sig = info.sig
        declared = f"{sig.name.text}({', '.join(str(p) for p in info.params)})" + (
            f" -> {info.returns}" if info.has_return else "")  # fmt: skip
        where = f"{self.module.filename}:{sig.span.line}"
        for m in check_hooks.annotation_mismatches(
            fn, info.params, info.returns, info.has_return, scope, lines
        ):
            self.error(m.span, "E316", f"hook '{sig.name.text}': {m.message}",
                       [*m.hints, f"it is declared at {where} as `{declared}`"],
                       file=display)  # fmt: skip

    # ---- agents

    def find_topic(self, ref: ast.Name) -> _TopicInfo | None:
        info = self.topics.get(ref.text)
        if info is None:
            hints = list(did_you_mean(ref.text, self.topics))
            if ref.text in self.tables:
                hints.append(f"'{ref.text}' is a table: its rows come out of its `aggregate` "
                             "step, which a `to` can follow")  # fmt: skip
            self.error(ref.span, "E203", f"unknown topic '{ref.text}'", hints)
        else:
            self.resolved(ref.span, "topic", ref.text)
        return info

    def find_hook(self, ref: ast.Name) -> _HookInfo | None:
        info = self.hooks.get(ref.text)
        if info is None:
            self.error(
                ref.span,
                "E204",
                f"unknown hook '{ref.text}'",
                did_you_mean(ref.text, self.hooks),
            )
        else:
            self.resolved(ref.span, "hook", ref.text)
        return info

    def check_agent(self, decl: ast.AgentDecl) -> ir.Agent | None:
        sources: list[_TopicInfo] = []
        ok = True
        seen: dict[str, Span] = {}
        for ref in decl.source.topics:
            if ref.text in seen:
                self.error(
                    ref.span, "E207", f"topic '{ref.text}' is merged with itself",
                    notes=self.first_here(seen[ref.text], f"topic '{ref.text}'", "merged"),
                )  # fmt: skip
                continue
            seen[ref.text] = ref.span
            info = self.find_topic(ref)
            if info is None:
                ok = False
            else:
                sources.append(info)
        first = sources[0].topic if sources else None
        for info, ref in zip(sources[1:], decl.source.topics[1:], strict=False):
            t = info.topic
            assert first is not None
            if (t.value_type, t.key_type) != (first.value_type, first.key_type):
                self.error(ref.span, "E302",
                           f"cannot merge topic {t.name} with {first.name}: they carry "
                           f"different types",
                           [f"{first.name} carries {first.value_type} keyed by "
                            f"{first.key_type}; {t.name} carries {t.value_type} keyed by "
                            f"{t.key_type}"])  # fmt: skip
                # Carry on with the first topic's types so the pipeline is still checked.
        unknown = not ok or not sources or any(s.first_use == "broken" for s in sources)
        stream = _Stream(
            elem=None if unknown or first is None else first.value_type,
            key=None if unknown or first is None else first.key_type,
            topic=".".join(s.topic.name for s in sources),
            partitions=max((s.topic.partitions for s in sources), default=1),
            inputs=tuple(s.topic.partitions for s in sources),
            names=() if decl.source.name is None else (decl.source.name.text,),
        )
        input_elem, input_key = stream.elem, stream.key
        ops: list[ir.Op] = []
        for op in decl.ops:
            if stream.mode == "done":
                self.error(
                    op.span,
                    "E305",
                    f"nothing may follow '{stream.mode_op}', which ends the pipeline",
                    ["start another agent from the same topic instead"],
                )
                break
            if stream.mode in ("items", "events") and not isinstance(op, ast.SinkOp):
                self.error(op.span, "E304",
                           f"'{_op_word(op)}' needs a plain stream, but '{stream.mode}' "
                           f"turned it into a stream of {_show(stream.elem)}",
                           [f"only 'sink' may follow '{stream.mode}'; move "
                            f"'{stream.mode}' to the end"])  # fmt: skip
                break
            before = (stream.elem, stream.key)
            names = stream.names
            result = self.check_op(op, stream, decl)
            if stream.elem != before[0] and stream.names is names:
                stream.names, stream.joined = (), False  # the names were the old element's
            if self.op_types is not None:
                self.op_types[op.span] = OpTypes(*before, stream.elem, stream.key)
            if result is not None:
                ops.append(result)
        if self.diagnostics or input_elem is None or input_key is None:
            return None
        return ir.Agent(
            name=decl.name.text,
            sources=self.share(tuple(s.topic.name for s in sources)),
            input=input_elem,
            input_key=input_key,
            ops=tuple(ops),
            text=_collapse(
                self.module.text[decl.pipeline_span.start : decl.pipeline_span.end]
            ),
            line=decl.span.line,
        )

    def check_op(self, op: ast.Op, s: _Stream, agent: ast.AgentDecl) -> ir.Op | None:
        handler = _HANDLERS[type(op)]
        return handler(self, op, s, agent)

    def op_process(
        self, op: ast.ProcessOp, s: _Stream, agent: ast.AgentDecl
    ) -> ir.Op | None:
        for ref in op.hooks:
            hook = self.find_hook(ref)
            if hook is None:
                s.elem = None
                continue
            self.check_hook_call(hook, ref, s.elem, "processor")
            if not hook.has_return:
                self.error(
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
        self, op: ast.GroupByOp, s: _Stream, agent: ast.AgentDecl
    ) -> ir.Op | None:
        first = op.path[0]
        elem = s.elem
        field_names = set(self.record_fields.get(elem.name, {})) \
            if isinstance(elem, ir.RecordType) else set()  # fmt: skip
        key: ir.Type | None
        hook_name: str | None = None
        path: tuple[str, ...] | None = None
        if (
            len(op.path) == 1
            and first.text in self.hooks
            and first.text not in field_names
        ):
            hook = self.hooks[first.text]
            self.resolved(first.span, "hook", first.text)
            self.check_hook_call(hook, first, elem, "key function")
            key = hook.returns
            if not hook.has_return:
                self.error(
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
                return self.lose(s)
            if not isinstance(elem, ir.RecordType):
                if len(op.path) == 1:
                    self.error(
                        first.span,
                        "E204",
                        f"unknown hook '{first.text}' (a stream of {elem} has no "
                        "fields to group by)",
                        did_you_mean(first.text, self.hooks),
                    )
                else:
                    self.error(first.span, "E309",
                               f"cannot group a stream of {elem} by a field: only records "
                               "have fields")  # fmt: skip
                return self.lose(s)
            if (
                len(op.path) == 1
                and first.text not in field_names
                and (elem.name, first.text) not in self.broken_fields
            ):
                # One name may be a field or a hook: say so, and suggest the nearest of both.
                fields = self.record_fields.get(elem.name, {})
                near = closest(first.text, [*fields, *self.hooks])
                kind = "the field " if near in fields else "the hook "
                what = "field or hook" if self.hooks else "field"
                self.error(first.span, "E201",
                           f"record {elem.name} has no {what} '{first.text}'",
                           [f"did you mean {kind if self.hooks else ''}'{near}'?"]
                           if near else [])  # fmt: skip
                key = None
            else:
                key = self.resolve_path(op.path, elem)
            path = self.share(tuple(n.text for n in op.path))
            key_span = op.path[0].span.to(op.path[-1].span)
        if key is not None and (
            isinstance(key, ir.OptionalType) or key not in KEY_TYPES
        ):
            what = f"'{'.'.join(path)}'" if path else f"hook '{hook_name}'"
            hints = ["keys are str, int or bytes, and never null"]
            if isinstance(key, ir.OptionalType):
                hints.insert(0, f"{what} may be null")
            self.error(
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
        name = f"{self.app}-{agent.name.text}-{s.topic}-{key_text}-repartition"
        topic = ir.Topic(name, name, key, s.elem, s.partitions, "repartition")
        if name in self.kafka_names:
            self.error(
                op.span,
                "E208",
                f"Kafka topic '{name}' is already used by {self.owner_of(name)}",
                notes=self.first_here(self.kafka_spans.get(name), f"Kafka topic '{name}'", "used"),
            )
        elif self.check_kafka_name(
            name,
            op.span,
            f"the repartition topic of agent {agent.name.text}",
            "it is named <app>-<agent>-<source topic>-<key>-repartition: shorten those "
            "names, or send the stream `through` a shorter topic before a second group_by",
        ):
            self.kafka_names[name] = ("the repartition topic of agent ", agent.name.text)
            self.kafka_spans[name] = op.span
            self.repartition[name] = _TopicInfo(topic, None)
        s.key, s.topic, s.inputs = key, name, (s.partitions,)
        return ir.GroupBy(path, hook_name, name, s.elem, key)

    def lose(self, s: _Stream) -> ir.Op | None:
        """After an error that leaves the stream's type unknown."""
        s.elem = None
        return None

    def op_take(self, op: ast.TakeOp, s: _Stream, agent: ast.AgentDecl) -> ir.Op | None:
        if op.size.value < 1:
            self.error(
                op.size.span,
                "E306",
                f"take needs a positive batch size, found {op.size.value}",
            )
        within = None
        if op.within is not None:
            within = op.within.seconds
            if within <= 0:
                self.error(
                    op.within.span,
                    "E306",
                    f"take needs a positive duration, found {op.within.text}",
                )
        if s.elem is None:
            return None
        s.elem = self.share(ir.ListType(s.elem))
        if s.key is None:
            return None
        return ir.Take(op.size.value, within, s.elem, s.key)

    def op_enumerate(
        self, op: ast.EnumerateOp, s: _Stream, agent: ast.AgentDecl
    ) -> ir.Op | None:
        if s.elem is None:
            return None
        s.elem = self.share(ir.TupleType((ir.INT, s.elem)))
        if s.key is None:
            return None
        return ir.Enumerate(op.start.value if op.start else 0, s.elem, s.key)

    def declared_by_kafka_name(self) -> dict[str, _TopicInfo]:
        """The first declared topic of each Kafka name, indexed once all topics are checked:
        a scan per `to "name"` made checking 100,000 agents quadratic."""
        if self.by_kafka_name is None:
            self.by_kafka_name = {}
            for info in self.topics.values():
                self.by_kafka_name.setdefault(info.topic.kafka_name, info)
        return self.by_kafka_name

    def target(self, ref: ast.TopicRef, s: _Stream, word: str) -> ir.Topic | None:
        """Resolve the topic of through/echo/to and check it accepts the stream."""
        if isinstance(ref, ast.Name):
            info = self.find_topic(ref)
            if info is None:
                return None
        else:
            declared = self.declared_by_kafka_name().get(ref.value)
            if declared is not None:
                info = declared
            elif ref.value in self.implicit:
                info = self.implicit[ref.value]
            else:
                if not self.check_kafka_name(ref.value, ref.span):
                    return None
                if s.elem is None or s.key is None:
                    return None  # its types would be guesses; any error is reported already
                if not self.storable(s.elem, ref.span, word):
                    return None
                if ref.value in self.kafka_names:
                    self.error(ref.span, "E208", f"Kafka topic '{ref.value}' is already used "
                               f"by {self.owner_of(ref.value)}",
                               notes=self.first_here(self.kafka_spans.get(ref.value),
                                                     f"Kafka topic '{ref.value}'", "used"),
                               )  # fmt: skip
                    return None
                self.kafka_names[ref.value] = f'the topic "{ref.value}"'
                self.kafka_spans[ref.value] = ref.span
                topic = ir.Topic(
                    ref.value, ref.value, s.key, s.elem, s.partitions, "implicit"
                )
                info = _TopicInfo(topic, ref.span, first_use=self.line_of(ref.span))
                self.implicit[ref.value] = info
                return topic
        t = info.topic
        if s.elem is None or info.first_use == "broken":
            return t
        if not self.storable(s.elem, ref.span, word):
            return None
        label = f"topic {t.name}" if t.kind == "declared" else \
            f"topic \"{t.name}\" (first used at {info.first_use})"  # fmt: skip
        if t.value_type != s.elem:
            self.error(
                ref.span,
                "E301",
                f"{label} carries {t.value_type}, but the stream carries {s.elem}",
                [f"expected {t.value_type}, found {s.elem}"],
            )
            return None
        if s.key is not None and t.key_type != s.key:
            self.error(
                ref.span,
                "E301",
                f"{label} is keyed by {t.key_type}, but the stream is keyed by {s.key}",
                [f"expected key {t.key_type}, found {s.key}"],
            )
            return None
        return t

    def storable(self, t: ir.Type, span: Span, word: str) -> bool:
        if isinstance(t, ir.TupleType | ir.EventType | ir.AnyType):
            self.error(span, "E314", f"'{word}' cannot send a stream of {t} to a topic",
                       ["topics carry records, primitives and lists; send before "
                        "enumerate"])  # fmt: skip
            return False
        return True

    def op_through(
        self, op: ast.ThroughOp, s: _Stream, agent: ast.AgentDecl
    ) -> ir.Op | None:
        topic = self.target(op.topic, s, "through")
        if topic is None or s.elem is None or s.key is None:
            return None
        s.topic, s.partitions, s.inputs = topic.name, topic.partitions, (topic.partitions,)
        return ir.Through(topic.name, s.elem, s.key)

    def op_echo(self, op: ast.EchoOp, s: _Stream, agent: ast.AgentDecl) -> ir.Op | None:
        names: list[str] = []
        for ref in op.topics:
            topic = self.target(ref, s, "echo")
            if topic is not None:
                if topic.name in names:
                    self.error(
                        ref.span, "E207", f"echo names topic '{topic.name}' twice"
                    )
                names.append(topic.name)
        if s.elem is None or s.key is None or len(names) != len(op.topics):
            return None
        return ir.Echo(tuple(names), s.elem, s.key)

    def op_to(self, op: ast.ToOp, s: _Stream, agent: ast.AgentDecl) -> ir.Op | None:
        topic = self.target(op.topic, s, "to")
        s.mode, s.mode_op = "done", "to"
        if topic is None or s.elem is None or s.key is None:
            return None
        return ir.To(topic.name, s.elem, s.key)

    def op_items(
        self, op: ast.ItemsOp, s: _Stream, agent: ast.AgentDecl
    ) -> ir.Op | None:
        s.mode = s.mode_op = "items"
        if s.elem is None or s.key is None:
            return None
        s.elem = self.share(ir.TupleType((s.key, s.elem)))
        return ir.Items(s.elem, s.key)

    def op_events(
        self, op: ast.EventsOp, s: _Stream, agent: ast.AgentDecl
    ) -> ir.Op | None:
        s.mode = s.mode_op = "events"
        if s.elem is None or s.key is None:
            return None
        s.elem = self.share(ir.EventType(s.key, s.elem))
        return ir.Events(s.elem, s.key)

    def op_filter(
        self, op: ast.FilterOp, s: _Stream, agent: ast.AgentDecl
    ) -> ir.Op | None:
        hook = self.find_hook(op.hook)
        if hook is None:
            return None
        self.check_hook_call(hook, op.hook, s.elem, "filter")
        if hook.returns != ir.BOOL:
            found = hook.returns if hook.has_return else "nothing"
            self.error(
                op.hook.span,
                "E308",
                f"filter hook '{op.hook.text}' must return bool",
                [f"expected bool, found {found}"],
            )
        if s.elem is None or s.key is None:
            return None
        return ir.Filter(op.hook.text, s.elem, s.key)

    def op_sink(self, op: ast.SinkOp, s: _Stream, agent: ast.AgentDecl) -> ir.Op | None:
        s.mode, s.mode_op = "done", "sink"
        hook = self.find_hook(op.hook)
        if hook is None:
            return None
        unpack = self.check_hook_call(hook, op.hook, s.elem, "sink")
        if hook.has_return:
            self.error(op.hook.span, "E308",
                       f"sink hook '{op.hook.text}' returns {_show(hook.returns)}; a sink "
                       "returns nothing", ["drop the `-> ...` from its declaration, or use it "
                                           "in `process`"])  # fmt: skip
        if s.elem is None or s.key is None:
            return None
        return ir.Sink(op.hook.text, unpack, s.elem, s.key)

    def op_where(
        self, op: ast.WhereOp, s: _Stream, agent: ast.AgentDecl
    ) -> ir.Op | None:
        if s.elem is None:
            return None
        if not isinstance(s.elem, ir.RecordType) and not s.joined:
            self.error(
                op.span,
                "E309",
                f"where needs a stream of records, but the stream carries {s.elem}",
                ["use `filter` with a hook for other elements"],
            )
            return None
        text = self.share(_collapse(self.module.text[op.expr.span.start : op.expr.span.end]))
        # The same condition (the same words) on the same record checks to the same result:
        # generated programs repeat conditions over thousands of agents.
        typed = self.checked_where.get((text, s.elem, s.names))
        if typed is None:
            errors = len(self.diagnostics)
            typed = self.check_expr(op.expr, self.scope(s))
            if typed is None or s.key is None:
                return None
            if typed.type != ir.BOOL:
                self.error(
                    op.expr.span,
                    "E311",
                    f"the condition of where must be a bool, found {typed.type}",
                )
                return None
            if len(self.diagnostics) == errors:
                self.checked_where[text, s.elem, s.names] = typed
        if s.key is None:
            return None
        return ir.Where(typed, text, s.elem, s.key, s.names)

    def scope(self, s: _Stream) -> Scope:
        """What names an expression may start with: the element's parts, each maybe named."""
        assert s.elem is not None
        if s.joined and isinstance(s.elem, ir.TupleType):
            return tuple(zip(s.names, s.elem.items, strict=True))
        return ((s.names[0] if s.names else None, s.elem),)

    # ---- hook calls

    def check_hook_call(self, hook: _HookInfo, ref: ast.Name, elem: ir.Type | None,
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
                    self.error(ref.span, "E307",
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
            self.error(ref.span, "E307",
                       f"hook '{name}' takes {_n(len(params), 'parameter')} {declared}, but a "
                       f"{role} is called with one element", hints)  # fmt: skip
            return False
        p = params[0]
        assert p is not None
        if not _accepts(p, elem):
            self.error(
                ref.span,
                "E307",
                f"hook '{name}' takes {p}, but the stream carries {elem}",
                [f"expected {p}, found {elem}"],
            )
        return False

    # ---- where expressions

    def resolve_path(
        self,
        names: Sequence[ast.Name],
        record: ir.Type,
        known: frozenset[tuple[str, ...]] = frozenset(),
        prefix: tuple[str, ...] = (),
        parts: tuple[str, ...] = (),
    ) -> ir.Type | None:
        """The type of `a.b.c` on a record; optional if any step on the way is optional.

        `known` holds paths a surrounding `x != null and ...` has shown are not null; `prefix`
        is the name the path was written after (`order` in `order.tip`), if any; `parts` the
        names the path could have started with instead (`payment` after a join), for hints.
        """
        current: ir.Type = record
        optional = False
        for i, n in enumerate(names):
            base = current.inner if isinstance(current, ir.OptionalType) else current
            if isinstance(current, ir.OptionalType):
                optional = True
            if not isinstance(base, ir.RecordType):
                self.error(n.span, "E201",
                           f"'{'.'.join(x.text for x in names[:i])}' is {current}, which has "
                           f"no fields")  # fmt: skip
                return None
            fields = self.record_fields.get(base.name, {})
            f = fields.get(n.text)
            if f is None and (base.name, n.text) in self.broken_fields:
                return None  # its type was already reported as unknown
            if f is None:
                self.error(
                    n.span,
                    "E201",
                    f"record {base.name} has no field '{n.text}'",
                    did_you_mean(n.text, [*fields, *parts] if i == 0 else fields),
                )
                return None
            self.resolved(n.span, "field", base.name, n.text)
            current = f.type
            # Narrow only the last field, and only if no optional record lies on the way: the
            # generated code reaches through optional records with conditional expressions,
            # which a type checker (mypy --strict on the worker) cannot narrow.
            if (
                i == len(names) - 1
                and not optional
                and isinstance(current, ir.OptionalType)
                and (*prefix, *_path(names)) in known
            ):
                current = current.inner
        if optional and not isinstance(current, ir.OptionalType):
            return ir.OptionalType(current)
        return current

    def check_expr(self, e: ast.Expr, record: ir.RecordType | Scope,
                   known: frozenset[tuple[str, ...]] = frozenset()) -> ir.Expr | None:  # fmt: skip
        if isinstance(e, ast.FieldPath):
            root, names, prefix = 0, e.names, cast(tuple[str, ...], ())
            base: ir.Type = record[0][1] if isinstance(record, tuple) else record
            if isinstance(record, tuple):
                # A path starts with a part's name, or else with a field of the element.
                for i, (name, part) in enumerate(record):
                    if name == e.names[0].text:
                        root, names, base, prefix = i, e.names[1:], part, (name,)
                        break
            parts = () if prefix or not isinstance(record, tuple) else tuple(
                name for name, _ in record if name is not None)  # fmt: skip
            t = self.resolve_path(names, base, known=known, prefix=prefix, parts=parts)
            if t is None:
                return None
            return self.share(ir.FieldRef(tuple(n.text for n in names), t, root))
        if isinstance(e, ast.StrLit):
            return self.share(ir.Const(e.value, ir.STR))
        if isinstance(e, ast.BoolLit):
            return self.share(ir.Const(e.value, ir.BOOL))
        if isinstance(e, ast.IntLit):
            return self.share(ir.Const(e.value, ir.INT))
        if isinstance(e, ast.FloatLit):
            return ir.Const(e.value, ir.FLOAT)
        if isinstance(e, ast.NullLit):
            # Typed once we know what it is compared with (see `binary`).
            return ir.Const(None, _NULL)
        if isinstance(e, ast.UnaryExpr):
            operand = self.check_expr(e.operand, record, known)
            if operand is None:
                return None
            if _is_null(operand):
                self.error(e.span, "E310", f"'{e.op}' cannot be applied to null")
                return None
            if e.op == "not":
                if operand.type != ir.BOOL:
                    self.error(
                        e.span,
                        "E310",
                        f"'not' needs a bool, found {operand.type}",
                        _maybe_null_hint(operand.type),
                    )
                    return None
                return ir.Unary("not", operand, ir.BOOL)
            if operand.type not in NUMERIC:
                self.error(
                    e.span,
                    "E310",
                    f"'-' needs a number, found {operand.type}",
                    _maybe_null_hint(operand.type),
                )
                return None
            return ir.Unary("-", operand, operand.type)
        if isinstance(e, ast.BinaryExpr):
            return self.check_binary(e, record, known)
        return None  # pragma: no cover - lists never reach expressions

    def check_chain(self, e: ast.BinaryExpr, record: ir.RecordType | Scope,
                    known: frozenset[tuple[str, ...]]) -> ir.Expr | None:  # fmt: skip
        """`a or b or c`, walked in a loop: the parser lets such a chain be any length."""
        links: list[ast.BinaryExpr] = []  # the chain's nodes, outermost first
        node: ast.Expr = e
        while isinstance(node, ast.BinaryExpr) and node.op == e.op:
            links.append(node)
            node = node.left
        # `x != null and x > 1`: the right side of `and` runs only when the left holds (and of
        # `or` only when it fails), so what the left proves about null narrows the right.
        holds = e.op == "and"
        result = self.check_expr(node, record, known)
        known = known | _not_null(node, holds)
        for link in reversed(links):
            right = self.check_expr(link.right, record, known)
            known = known | _not_null(link.right, holds)
            if result is None or right is None:
                result = None
                continue
            result = self.check_bools(link, result, right)
        return result

    def check_bools(self, e: ast.BinaryExpr, left: ir.Expr, right: ir.Expr) -> ir.Expr | None:
        op = cast(ir.BinaryOp, e.op)
        for side in (left, right):
            if side.type != ir.BOOL:
                self.error(
                    e.span,
                    "E310",
                    f"'{op}' needs bool operands, found {_show_expr(side)}",
                    _maybe_null_hint(side.type),
                )
                return None
        return ir.Binary(op, left, right, ir.BOOL)

    def check_binary(self, e: ast.BinaryExpr, record: ir.RecordType | Scope,
                     known: frozenset[tuple[str, ...]]) -> ir.Expr | None:  # fmt: skip
        if e.op in ("and", "or"):
            return self.check_chain(e, record, known)
        left = self.check_expr(e.left, record, known)
        right = self.check_expr(e.right, record, known)
        if left is None or right is None:
            return None
        op = cast(ir.BinaryOp, e.op)
        lt, rt = left.type, right.type
        if op in ("==", "!="):
            if _is_null(left) and _is_null(right):
                self.error(
                    e.span, "E310", "comparing null with null is always the same"
                )
                return None
            if _is_null(left) or _is_null(right):
                other = right if _is_null(left) else left
                if not isinstance(other.type, ir.OptionalType):
                    self.error(
                        e.span,
                        "E310",
                        f"{_show_expr(other)} is {other.type}, which is never null",
                        [f"only optional values ({other.type}?) can be null"],
                    )
                    return None
                null = ir.Const(None, other.type)
                left, right = (null, right) if _is_null(left) else (left, null)
                return ir.Binary(op, left, right, ir.BOOL)
            lb, rb = _strip(lt), _strip(rt)
            if lb != rb and not (lb in NUMERIC and rb in NUMERIC):
                self.error(
                    e.span,
                    "E310",
                    f"cannot compare {lt} with {rt}",
                    [f"'{op}' needs values of the same type"],
                )
                return None
            return ir.Binary(op, left, right, ir.BOOL)
        if _is_null(left) or _is_null(right):
            self.error(e.span, "E310", f"'{op}' cannot be applied to null")
            return None
        if op in ("<", "<=", ">", ">="):
            if (lt in NUMERIC and rt in NUMERIC) or lt == rt == ir.STR or lt == rt == ir.TIME:
                return ir.Binary(op, left, right, ir.BOOL)
            self.error(
                e.span,
                "E310",
                f"cannot compare {lt} with {rt} using '{op}'",
                _maybe_null_hint(lt if isinstance(lt, ir.OptionalType) else rt)
                or [f"'{op}' compares two numbers, two strings or two times"],
            )
            return None
        # arithmetic
        if op == "+" and lt == rt == ir.STR:
            return ir.Binary(op, left, right, ir.STR)
        if lt in NUMERIC and rt in NUMERIC:
            result = ir.FLOAT if (op == "/" or ir.FLOAT in (lt, rt)) else ir.INT
            return ir.Binary(op, left, right, result)
        self.error(
            e.span,
            "E310",
            f"'{op}' cannot be applied to {lt} and {rt}",
            _maybe_null_hint(lt if isinstance(lt, ir.OptionalType) else rt)
            or [f"'{op}' needs two numbers" + (" or two strings" if op == "+" else "")],
        )
        return None


# ---------------------------------------------------------------------------------------------
# Helpers


class _Bad:
    """A literal that does not fit a type."""


_BAD = _Bad()
_NULL = ir.OptionalType(
    ir.AnyType()
)  # the type of `null` until it meets the other side

_WHERE = {
    "field": "field type", "topic": "topic's value type", "key": "topic's key type",
    "inner-field": "field type", "inner-topic": "topic's value type",
    "inner-key": "topic's key type", "return": "return type", "inner-return": "return type",
    "inner": "type argument",
}  # fmt: skip

_HANDLERS: dict[
    type, Callable[[_Checker, ast.Op, _Stream, ast.AgentDecl], ir.Op | None]
] = {
    ast.ProcessOp: _Checker.op_process,  # type: ignore[dict-item]
    ast.GroupByOp: _Checker.op_group_by,  # type: ignore[dict-item]
    ast.TakeOp: _Checker.op_take,  # type: ignore[dict-item]
    ast.EnumerateOp: _Checker.op_enumerate,  # type: ignore[dict-item]
    ast.ThroughOp: _Checker.op_through,  # type: ignore[dict-item]
    ast.EchoOp: _Checker.op_echo,  # type: ignore[dict-item]
    ast.ItemsOp: _Checker.op_items,  # type: ignore[dict-item]
    ast.EventsOp: _Checker.op_events,  # type: ignore[dict-item]
    ast.WhereOp: _Checker.op_where,  # type: ignore[dict-item]
    ast.FilterOp: _Checker.op_filter,  # type: ignore[dict-item]
    ast.ToOp: _Checker.op_to,  # type: ignore[dict-item]
    ast.SinkOp: _Checker.op_sink,  # type: ignore[dict-item]
    ast.AggregateOp: check_state.op_aggregate,  # type: ignore[dict-item]
    ast.DistinctOp: check_time.op_distinct,  # type: ignore[dict-item]
    ast.WindowOp: check_time.op_window,  # type: ignore[dict-item]
    ast.SelectOp: check_join.op_select,  # type: ignore[dict-item]
    ast.JoinOp: check_join.op_join,  # type: ignore[dict-item]
    ast.JoinStreamOp: check_join.op_join_stream,  # type: ignore[dict-item]
}

_OP_WORDS = {
    ast.ProcessOp: "process", ast.GroupByOp: "group_by", ast.TakeOp: "take",
    ast.EnumerateOp: "enumerate", ast.ThroughOp: "through", ast.EchoOp: "echo",
    ast.ItemsOp: "items", ast.EventsOp: "events", ast.WhereOp: "where", ast.FilterOp: "filter",
    ast.ToOp: "to", ast.SinkOp: "sink", ast.AggregateOp: "aggregate",
    ast.DistinctOp: "distinct", ast.WindowOp: "window", ast.SelectOp: "select", ast.JoinOp: "join",
    ast.JoinStreamOp: "join stream",
}  # fmt: skip


def _op_word(op: ast.Op) -> str:
    return _OP_WORDS[type(op)]


def _accepts(param: ir.Type, actual: ir.Type) -> bool:
    """Whether a hook parameter of type `param` accepts `actual`; `any` matches anything."""
    if isinstance(param, ir.AnyType):
        return True
    if isinstance(param, ir.OptionalType) and not isinstance(actual, ir.OptionalType):
        return _accepts(param.inner, actual)  # a parameter that takes T? also takes T
    if type(param) is not type(actual):
        return False
    if isinstance(param, ir.ListType):
        return _accepts(param.item, actual.item)  # type: ignore[union-attr]
    if isinstance(param, ir.OptionalType):
        return _accepts(param.inner, actual.inner)  # type: ignore[union-attr]
    if isinstance(param, ir.TupleType):
        items = actual.items  # type: ignore[union-attr]
        return len(param.items) == len(items) and all(
            _accepts(p, a) for p, a in zip(param.items, items, strict=True)
        )
    if isinstance(param, ir.EventType) and isinstance(actual, ir.EventType):
        return _accepts(param.key, actual.key) and _accepts(param.value, actual.value)
    return param == actual


def _rebound_defs(
    tree: pyast.Module, functions: Mapping[str, pyast.FunctionDef | pyast.AsyncFunctionDef]
) -> set[pyast.AST]:
    """The functions whose name a top-level statement after their `def` binds again."""
    rebound: set[pyast.AST] = set()
    for name, fn in functions.items():
        after = tree.body[tree.body.index(fn) + 1 :]
        if any(
            isinstance(node, pyast.Name) and node.id == name and isinstance(node.ctx, pyast.Store)
            for statement in after
            for node in pyast.walk(statement)
        ):
            rebound.add(fn)
    return rebound


def _call_proven(fn: pyast.FunctionDef | pyast.AsyncFunctionDef) -> bool:
    """Whether the source alone tells what calling `fn` gives back, so generated code may call
    it directly: an undecorated `async def` gives a coroutine to await; an undecorated `def`
    that is not a generator and returns no value gives None. Anything else (a decorator, a
    `def` returning another call's result) may give an awaitable: the runtime decides."""
    if fn.decorator_list:
        return False
    if isinstance(fn, pyast.AsyncFunctionDef):
        return True
    own: list[pyast.AST] = list(fn.body)
    while own:
        node = own.pop()
        if isinstance(node, pyast.Yield | pyast.YieldFrom):
            return False
        if isinstance(node, pyast.Return) and not (
            node.value is None
            or (isinstance(node.value, pyast.Constant) and node.value.value is None)
        ):
            return False
        if not isinstance(node, pyast.FunctionDef | pyast.AsyncFunctionDef | pyast.ClassDef
                          | pyast.Lambda):  # fmt: skip
            own.extend(pyast.iter_child_nodes(node))
    return True


def _path(names: Sequence[ast.Name]) -> tuple[str, ...]:
    return tuple(n.text for n in names)


def _not_null(e: ast.Expr, holds: bool) -> frozenset[tuple[str, ...]]:
    """Field paths proven not null when `e` evaluates to `holds`."""
    if isinstance(e, ast.UnaryExpr) and e.op == "not":
        return _not_null(e.operand, not holds)
    if not isinstance(e, ast.BinaryExpr):
        return frozenset()
    if e.op in ("and", "or"):
        if (
            e.op == "and"
        ) == holds:  # `a and b` true, or `a or b` false: both sides are known
            # A loop down the chain `a and b and c`, which may be any length.
            proven: frozenset[tuple[str, ...]] = frozenset()
            node: ast.Expr = e
            while isinstance(node, ast.BinaryExpr) and node.op == e.op:
                proven |= _not_null(node.right, holds)
                node = node.left
            return proven | _not_null(node, holds)
        return frozenset()
    if e.op in ("==", "!=") and (e.op == "!=") == holds:
        sides = (e.left, e.right)
        if any(isinstance(x, ast.NullLit) for x in sides):
            for x in sides:
                if isinstance(x, ast.FieldPath):
                    return frozenset([_path(x.names)])
    return frozenset()


def _strip(t: ir.Type) -> ir.Type:
    return t.inner if isinstance(t, ir.OptionalType) else t


def _is_null(e: ir.Expr) -> bool:
    return isinstance(e, ir.Const) and e.value is None and e.type == _NULL


def _show_expr(e: ir.Expr) -> str:
    if isinstance(e, ir.FieldRef):
        return "'" + ".".join(e.path) + "'"
    return str(e.type)


def _maybe_null_hint(t: ir.Type) -> list[str]:
    if isinstance(t, ir.OptionalType):
        return [f"{t} may be null: test it first, as in `x != null and x > 1`"]
    return []


def _show(t: ir.Type | None) -> str:
    return "unknown values" if t is None else str(t)


def _lit_type_name(lit: ast.Default) -> str:
    return {ast.StrLit: "str", ast.IntLit: "int", ast.FloatLit: "float", ast.BoolLit: "bool",
            ast.NullLit: "null", ast.ListLit: "a list"}[type(lit)]  # fmt: skip


def _source_name(filename: str) -> str:
    # Generated files quote the source by its own name only: any folder in the path depends
    # on where streamc was run from, and `build --check` must agree wherever it runs.
    return PurePosixPath(filename.replace("\\", "/")).name


def _n(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


_COMMENT_OR_STRING = re.compile(r'"[^"\\\n]*(?:\\.[^"\\\n]*)*"|#[^\n]*')  # unrolled: linear


def _collapse(text: str) -> str:
    """Source text without comments, whitespace runs collapsed to one space."""
    text = _COMMENT_OR_STRING.sub(
        lambda m: m.group(0) if m.group(0)[0] == '"' else " ", text
    )
    return " ".join(text.split())


def _first_line(exc: Exception) -> str:
    """packaging's message without the source line and caret it appends."""
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
