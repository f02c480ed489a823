"""The view model of code generation: what the templates see. Every name in it is already a
safe identifier, every literal already escaped (`emit_shape` builds it from the IR)."""

from __future__ import annotations

from dataclasses import dataclass


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
