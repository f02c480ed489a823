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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Literal, TypeVar

from . import ast, check_hooks, check_join, check_state, check_time, ir
from . import check_expr as expr_rules
from . import check_ops as op_rules
from . import check_records as record_rules
from .check_common import KEY_TYPES as KEY_TYPES
from .check_common import _accepts as _accepts
from .check_common import _collapse as _collapse
from .check_common import _HookInfo, _n, _show, _TopicInfo
from .check_common import _is_null as _is_null
from .check_common import _Stream as _Stream
from .check_records import BUILTIN_TYPE_NAMES as BUILTIN_TYPE_NAMES
from .check_topology import (
    KAFKA_NAME_RULE,
    MAX_PARTITIONS,
    check_topology,
    kafka_name_problem,
    positions_topics,
)
from .diagnostics import Diagnostic, Note, Span, did_you_mean
from .gcpause import gc_paused

IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def hooks_display_path(sdl_filename: str, hooks_path: str) -> str:
    """The name diagnostics use for a hooks module: its path next to the .sdl as given."""
    folder = posixpath.dirname(sdl_filename.replace("\\", "/"))
    return posixpath.join(folder, hooks_path) if folder else hooks_path


RefKind = Literal["record", "topic", "hook", "field"]


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

    # ---- records and types: check_records.py

    collect_records = record_rules.collect_records
    check_records = record_rules.check_records
    order_records = record_rules.order_records
    check_default = record_rules.check_default
    literal_value = record_rules.literal_value
    bad_default = record_rules.bad_default
    resolve_type = record_rules.resolve_type

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
        self.rebound_defs.update(check_hooks.rebound_defs(tree, functions))
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
        info.call_proven = fn not in self.rebound_defs and check_hooks.call_proven(fn)
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

    # ---- the stateless operations (_HANDLERS) and their helpers: check_ops.py

    lose = op_rules.lose
    declared_by_kafka_name = op_rules.declared_by_kafka_name
    target = op_rules.target
    storable = op_rules.storable
    check_hook_call = op_rules.check_hook_call

    # ---- where expressions: check_expr.py

    scope = expr_rules.scope
    resolve_path = expr_rules.resolve_path
    check_expr = expr_rules.check_expr
    check_chain = expr_rules.check_chain
    check_bools = expr_rules.check_bools
    check_binary = expr_rules.check_binary


# ---------------------------------------------------------------------------------------------
# Helpers


_HANDLERS: dict[
    type, Callable[[_Checker, ast.Op, _Stream, ast.AgentDecl], ir.Op | None]
] = {
    ast.ProcessOp: op_rules.op_process,  # type: ignore[dict-item]
    ast.GroupByOp: op_rules.op_group_by,  # type: ignore[dict-item]
    ast.TakeOp: op_rules.op_take,  # type: ignore[dict-item]
    ast.EnumerateOp: op_rules.op_enumerate,  # type: ignore[dict-item]
    ast.ThroughOp: op_rules.op_through,  # type: ignore[dict-item]
    ast.EchoOp: op_rules.op_echo,  # type: ignore[dict-item]
    ast.ItemsOp: op_rules.op_items,  # type: ignore[dict-item]
    ast.EventsOp: op_rules.op_events,  # type: ignore[dict-item]
    ast.WhereOp: op_rules.op_where,  # type: ignore[dict-item]
    ast.FilterOp: op_rules.op_filter,  # type: ignore[dict-item]
    ast.ToOp: op_rules.op_to,  # type: ignore[dict-item]
    ast.SinkOp: op_rules.op_sink,  # type: ignore[dict-item]
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


def _source_name(filename: str) -> str:
    # Generated files quote the source by its own name only: any folder in the path depends
    # on where streamc was run from, and `build --check` must agree wherever it runs.
    return PurePosixPath(filename.replace("\\", "/")).name


def _first_line(exc: Exception) -> str:
    """packaging's message without the source line and caret it appends."""
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
