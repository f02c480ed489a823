"""The syntax tree of an .sdl file: what was written, with where it was written.

Nothing here is resolved or checked: names are just names and types are just type expressions.
`checker.check` turns a `Module` into an `ir.Program`. Every node carries a `Span` so any
diagnostic can point at exactly the text it is about.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .diagnostics import Span


@dataclass(frozen=True, slots=True)
class Name:
    """An identifier as written; backquotes (`from`) are already stripped from `text`."""

    text: str
    span: Span


# ---------------------------------------------------------------------------------------------
# Type expressions


@dataclass(frozen=True, slots=True)
class NamedType:
    """`str`, `Order`, `list[str]`, `Event[str, Order]`, each maybe followed by `?`."""

    name: Name
    args: tuple[TypeExpr, ...]
    optional: bool
    span: Span
    depth: int = field(default=1, compare=False)  # nesting depth, bounded by the parser


@dataclass(frozen=True, slots=True)
class TupleTypeExpr:
    """`(int, Order)`: only meaningful as a hook parameter or return type."""

    items: tuple[TypeExpr, ...]
    optional: bool
    span: Span
    depth: int = field(default=1, compare=False)


TypeExpr = NamedType | TupleTypeExpr

# ---------------------------------------------------------------------------------------------
# Literals (field defaults, and the leaves of `where` expressions)


@dataclass(frozen=True, slots=True)
class StrLit:
    value: str
    span: Span


@dataclass(frozen=True, slots=True)
class IntLit:
    value: int
    span: Span


@dataclass(frozen=True, slots=True)
class FloatLit:
    value: float
    span: Span


@dataclass(frozen=True, slots=True)
class BoolLit:
    value: bool
    span: Span


@dataclass(frozen=True, slots=True)
class NullLit:
    span: Span


@dataclass(frozen=True, slots=True)
class ListLit:
    items: tuple[Literal, ...]
    span: Span


Literal = StrLit | IntLit | FloatLit | BoolLit | NullLit
Default = Literal | ListLit

# ---------------------------------------------------------------------------------------------
# `where` expressions


@dataclass(frozen=True, slots=True)
class FieldPath:
    """`amount` or `customer.country`."""

    names: tuple[Name, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class UnaryExpr:
    op: str  # "not" or "-"
    operand: Expr
    span: Span
    depth: int = field(default=1, compare=False)  # nesting depth, bounded by the parser


@dataclass(frozen=True, slots=True)
class BinaryExpr:
    op: str  # "and", "or", "==", "!=", "<", "<=", ">", ">=", "+", "-", "*", "/", "%"
    left: Expr
    right: Expr
    span: Span
    depth: int = field(default=1, compare=False)


Expr = FieldPath | Literal | UnaryExpr | BinaryExpr

# ---------------------------------------------------------------------------------------------
# Declarations


@dataclass(frozen=True, slots=True)
class AppDecl:
    name: Name
    span: Span


@dataclass(frozen=True, slots=True)
class FieldDecl:
    name: Name
    type: TypeExpr
    default: Default | None
    span: Span


@dataclass(frozen=True, slots=True)
class RecordDecl:
    name: Name
    fields: tuple[FieldDecl, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class TopicKey:
    type: TypeExpr
    span: Span


@dataclass(frozen=True, slots=True)
class TopicPartitions:
    count: IntLit
    span: Span


@dataclass(frozen=True, slots=True)
class TopicKafkaName:
    name: StrLit
    span: Span


@dataclass(frozen=True, slots=True)
class TopicTimestamp:
    """`timestamp created_at`: the field holding each message's event time."""

    field: Name
    span: Span


@dataclass(frozen=True, slots=True)
class TopicCompacted:
    """`compacted`: the topic is created with cleanup.policy=compact."""

    span: Span


TopicOption = TopicKey | TopicPartitions | TopicKafkaName | TopicTimestamp | TopicCompacted


@dataclass(frozen=True, slots=True)
class TopicDecl:
    name: Name
    value_type: TypeExpr | None  # None: raw bytes
    options: tuple[
        TopicOption, ...
    ]  # as written; duplicates are the checker's to report
    span: Span


@dataclass(frozen=True, slots=True)
class TableSource:
    """`from accounts`: the table's rows are the topic's records."""

    topic: Name
    span: Span


@dataclass(frozen=True, slots=True)
class TableGlobal:
    """`global`: every worker holds all of the table."""

    span: Span


@dataclass(frozen=True, slots=True)
class TableDecl:
    """`table totals: AccountTotals key str partitions 4`, or
    `table accounts_by_id: Account key str from accounts [global]`."""

    name: Name
    value_type: TypeExpr
    options: tuple[
        TopicKey | TopicPartitions | TableSource | TableGlobal, ...
    ]  # as written; the checker finds duplicates
    span: Span


@dataclass(frozen=True, slots=True)
class HookSig:
    name: Name
    params: tuple[TypeExpr, ...]
    returns: TypeExpr | None
    span: Span


@dataclass(frozen=True, slots=True)
class HooksDecl:
    path: StrLit  # the module's path relative to the .sdl file
    hooks: tuple[HookSig, ...]
    span: Span


# ---- operations


@dataclass(frozen=True, slots=True)
class ProcessOp:
    hooks: tuple[Name, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class GroupByOp:
    path: tuple[Name, ...]  # a field path, or a single name that may be a key hook
    span: Span


@dataclass(frozen=True, slots=True)
class Duration:
    seconds: float
    text: str
    span: Span


@dataclass(frozen=True, slots=True)
class TakeOp:
    size: IntLit
    within: Duration | None
    span: Span


@dataclass(frozen=True, slots=True)
class EnumerateOp:
    start: IntLit | None
    span: Span


TopicRef = Name | StrLit  # a declared topic, or a Kafka topic given by its name


@dataclass(frozen=True, slots=True)
class ThroughOp:
    topic: TopicRef
    span: Span


@dataclass(frozen=True, slots=True)
class EchoOp:
    topics: tuple[TopicRef, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class ItemsOp:
    span: Span


@dataclass(frozen=True, slots=True)
class EventsOp:
    span: Span


@dataclass(frozen=True, slots=True)
class WhereOp:
    expr: Expr
    span: Span


@dataclass(frozen=True, slots=True)
class FilterOp:
    hook: Name
    span: Span


@dataclass(frozen=True, slots=True)
class ToOp:
    topic: TopicRef
    span: Span


@dataclass(frozen=True, slots=True)
class SinkOp:
    hook: Name
    span: Span


@dataclass(frozen=True, slots=True)
class WindowKind:
    """`window tumbling 1m`, `window hopping 5m every 1m`, `window session 30m`."""

    kind: str  # "tumbling", "hopping" or "session"
    size: Duration  # the gap of a session window
    every: Duration | None  # hopping only
    span: Span


@dataclass(frozen=True, slots=True)
class WindowGrace:
    duration: Duration
    span: Span


@dataclass(frozen=True, slots=True)
class WindowEmit:
    mode: str  # "updates" or "final"
    span: Span


@dataclass(frozen=True, slots=True)
class WindowLate:
    topic: TopicRef
    span: Span


WindowOption = WindowKind | WindowGrace | WindowEmit | WindowLate


@dataclass(frozen=True, slots=True)
class WindowOp:
    """Window options written as an operation of their own (they belong to an aggregate)."""

    options: tuple[WindowOption, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class DistinctOp:
    """`distinct within 10m` (by key) or `distinct order_id within 10m` (by a field)."""

    path: tuple[Name, ...]  # empty: the key
    within: Duration
    span: Span


@dataclass(frozen=True, slots=True)
class AggWindow:
    """`window.start` or `window.end`: a bound of the aggregate's window."""

    bound: Name
    span: Span


@dataclass(frozen=True, slots=True)
class AggKey:
    """`key`: the stream's current key."""

    span: Span


@dataclass(frozen=True, slots=True)
class AggCall:
    """`count()`, `sum(amount)`, `reduce(longest, "")`: a function name the checker resolves."""

    func: Name
    args: tuple[Expr | ListLit, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class AggField:
    """`orders = count()`: one field of the table's record and what fills it."""

    name: Name
    value: AggKey | AggCall | AggWindow
    span: Span


@dataclass(frozen=True, slots=True)
class AggregateOp:
    table: Name
    fields: tuple[AggField, ...]
    span: Span
    options: tuple[WindowOption, ...] = ()  # as written; the checker finds duplicates


@dataclass(frozen=True, slots=True)
class JoinOp:
    """`[left] join TABLE as NAME on key|FIELD_PATH`."""

    table: Name
    name: Name
    on: tuple[Name, ...]  # a field path; empty: the stream's key
    left: bool
    span: Span


@dataclass(frozen=True, slots=True)
class JoinStreamOp:
    """`[left|outer] join stream TOPIC as NAME within D [grace D] [late to TOPIC]`."""

    topic: TopicRef
    name: Name
    how: str  # "inner", "left" or "outer"
    within: Duration
    grace: WindowGrace | None
    late: WindowLate | None
    span: Span


@dataclass(frozen=True, slots=True)
class SelectField:
    """`tier = account.tier`: one field of the selected record and its value."""

    name: Name
    value: Expr
    span: Span


@dataclass(frozen=True, slots=True)
class SelectOp:
    """`select EnrichedOrder { id = order.id, ... }`: the element becomes a new record."""

    record: Name
    fields: tuple[SelectField, ...]
    span: Span


Op = (
    ProcessOp | GroupByOp | TakeOp | EnumerateOp | ThroughOp | EchoOp | ItemsOp | EventsOp
    | WhereOp | FilterOp | ToOp | SinkOp | AggregateOp | DistinctOp | WindowOp | SelectOp
    | JoinOp | JoinStreamOp
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Source:
    """`from orders` or `from orders & refunds`, maybe followed by `as order`."""

    topics: tuple[Name, ...]
    span: Span
    name: Name | None = None  # `as order`: the element's name in expressions


@dataclass(frozen=True, slots=True)
class AgentDecl:
    name: Name
    source: Source
    ops: tuple[Op, ...]
    span: Span

    @property
    def pipeline_span(self) -> Span:
        """From `from` to the end of the last operation."""
        return self.source.span.to(self.ops[-1].span) if self.ops else self.source.span


@dataclass(frozen=True, slots=True)
class RequiresDecl:
    """`requires "httpx>=0.27", ...`: Python packages the hooks import."""

    requirements: tuple[StrLit, ...]
    span: Span


Decl = AppDecl | RecordDecl | TopicDecl | HooksDecl | TableDecl | AgentDecl | RequiresDecl


@dataclass(frozen=True, slots=True)
class Module:
    filename: str  # as the user gave it; used in diagnostics
    text: (
        str  # the source, so the checker can quote expressions and pipelines as written
    )
    decls: tuple[Decl, ...]
