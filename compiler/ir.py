"""The checked program: what `check` produces and `emit` and `graph` consume.

Everything here is already resolved and typed: names refer to declarations that exist, every
operation knows the key and element type it receives and produces, and every internal topic
(repartition topics, topics named only by a string in `through`/`echo`) is declared. Names are
the source's names; turning them into safe Python identifiers is the code generator's job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal as TypingLiteral

# ---------------------------------------------------------------------------------------------
# Types


@dataclass(frozen=True, slots=True)
class PrimType:
    """`str`, `int`, `float`, `bool`, `bytes` (a topic without a value type carries bytes) or
    `time` (an instant: RFC 3339 or epoch milliseconds on the wire, an aware UTC datetime)."""

    name: TypingLiteral["str", "int", "float", "bool", "bytes", "time"]

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True)
class ListType:
    item: Type

    def __str__(self) -> str:
        return f"list[{self.item}]"


@dataclass(frozen=True, slots=True)
class OptionalType:
    """A value that may be null; written `T?` in the source."""

    inner: Type

    def __str__(self) -> str:
        return f"{self.inner}?"


@dataclass(frozen=True, slots=True)
class RecordType:
    name: str

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True)
class TupleType:
    """What `enumerate` (int, T) and `items` (K, V) produce."""

    items: tuple[Type, ...]

    def __str__(self) -> str:
        return "(" + ", ".join(str(t) for t in self.items) + ")"


@dataclass(frozen=True, slots=True)
class EventType:
    """What `events` produces: the raw message with its decoded key and value."""

    key: Type
    value: Type

    def __str__(self) -> str:
        return f"Event[{self.key}, {self.value}]"


@dataclass(frozen=True, slots=True)
class AnyType:
    """Only as a hook parameter type: the hook accepts any element."""

    def __str__(self) -> str:
        return "any"


Type = PrimType | ListType | OptionalType | RecordType | TupleType | EventType | AnyType

STR = PrimType("str")
INT = PrimType("int")
FLOAT = PrimType("float")
BOOL = PrimType("bool")
BYTES = PrimType("bytes")
TIME = PrimType("time")

# ---------------------------------------------------------------------------------------------
# Declarations

Scalar = str | int | float | bool | None


@dataclass(frozen=True, slots=True)
class Default:
    """A field's default. `value` is a Python value of the field's type (lists as tuples)."""

    value: Scalar | tuple[Scalar, ...]


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    type: Type
    default: Default | None  # None: the field is required


@dataclass(frozen=True, slots=True)
class Record:
    name: str
    fields: tuple[Field, ...]
    doc: str | None = None


TopicKind = TypingLiteral["declared", "implicit", "repartition"]


@dataclass(frozen=True, slots=True)
class Topic:
    """A topic the worker reads or writes.

    `declared` topics come from `topic` declarations; `implicit` ones from a string in
    `through`/`echo`/`to` (their types are the stream's at that point); `repartition` ones
    from `group_by`, named `<app>-<agent>-<source topic>-<key>-repartition`.
    """

    name: str  # the name the source uses; for implicit topics, the string itself
    kafka_name: str  # the real Kafka topic name
    key_type: Type
    value_type: Type
    partitions: int
    kind: TopicKind
    # Forwards to it carry their source position: an `aggregate` reads what is written here.
    positions: bool = False
    # The record field (`time` or `time?`) holding each message's event time; None: the
    # Kafka message timestamp.
    timestamp_field: str | None = None
    compacted: bool = False  # created with cleanup.policy=compact


@dataclass(frozen=True, slots=True)
class Table:
    """A keyed table (`table` declaration); its changelog is `<app>-<name>-changelog`."""

    name: str
    key_type: Type
    value_type: RecordType
    partitions: int
    changelog: str  # the changelog topic's Kafka name
    window: Window | None = None  # set by a windowed aggregate
    # A table over a topic (`from TOPIC`): its rows are the topic's records and the topic is
    # its changelog (`changelog` is then the topic's Kafka name); no aggregate fills it.
    source: str | None = None  # the topic's name
    global_: bool = False  # every worker holds all of it


@dataclass(frozen=True, slots=True)
class Hook:
    """A user Python function, declared with its signature in a `hooks` block."""

    name: str
    module: str  # the Python module name inside the worker package's hooks, e.g. "hooks"
    params: tuple[Type, ...]
    returns: Type | None  # None: returns nothing (a sink)
    is_async: bool  # read from the hook's source (`async def`)
    # The source proves what a call gives back: a coroutine (`is_async`) or nothing. Only then
    # does generated code call it directly; otherwise the runtime awaits what it returns if
    # that is awaitable (a plain `def` may wrap an `async def`).
    call_proven: bool = False


@dataclass(frozen=True, slots=True)
class HookModule:
    """A user module of hooks, shipped inside the worker package."""

    module: str  # Python module name, from the file's stem
    source_path: str  # as written in the .sdl, relative to the .sdl file
    text: str  # the file's contents, copied verbatim into the package


@dataclass(frozen=True)
class HelperModule:
    """A local module the hooks import by name (`from helpers import LIMIT`), shipped too."""

    module: str  # the name the hooks import it by
    source_path: str  # relative to the .sdl file
    text: str


# ---------------------------------------------------------------------------------------------
# `where` expressions (typed)


@dataclass(frozen=True, slots=True)
class FieldRef:
    path: tuple[str, ...]  # `customer.country` -> ("customer", "country")
    type: Type
    # Which part of the element the path starts from: 0 the element itself, 1 the row a join
    # found (the element is then the pair). A name (`order.id`, `account.tier`) is resolved to
    # its part, so the path never holds it.
    root: int = 0


@dataclass(frozen=True, slots=True)
class Const:
    value: Scalar
    type: Type  # for None: OptionalType of the type it is compared with


@dataclass(frozen=True, slots=True)
class Unary:
    op: TypingLiteral["not", "-"]
    operand: Expr
    type: Type


BinaryOp = TypingLiteral["and", "or", "==", "!=", "<", "<=", ">", ">=", "+", "-", "*", "/", "%"]


@dataclass(frozen=True, slots=True)
class Binary:
    op: BinaryOp
    left: Expr
    right: Expr
    type: Type


Expr = FieldRef | Const | Unary | Binary

# ---------------------------------------------------------------------------------------------
# Operations. Each carries the element type it produces in `out`; `key` is the message key type
# after it. The first operation receives the agent's `input`/`input_key`.


@dataclass(frozen=True, slots=True)
class Process:
    hooks: tuple[str, ...]  # hook names, applied in order
    out: Type
    key: Type


@dataclass(frozen=True, slots=True)
class GroupBy:
    field: tuple[str, ...] | None  # re-key by this field path...
    hook: str | None  # ...or by this key function
    topic: str  # the repartition topic's name (a Topic of kind "repartition")
    out: Type
    key: Type  # the new key type


@dataclass(frozen=True, slots=True)
class Take:
    n: int
    within_seconds: float | None
    out: Type  # ListType of the input
    key: Type


@dataclass(frozen=True, slots=True)
class Enumerate:
    start: int
    out: Type  # TupleType((INT, input))
    key: Type


@dataclass(frozen=True, slots=True)
class Through:
    topic: str
    out: Type
    key: Type


@dataclass(frozen=True, slots=True)
class Echo:
    topics: tuple[str, ...]
    out: Type
    key: Type


@dataclass(frozen=True, slots=True)
class Where:
    expr: Expr
    text: str  # the expression as written, for docs and the graph
    out: Type
    key: Type
    names: tuple[str | None, ...] = ()  # the names of the element's parts, see Select


@dataclass(frozen=True, slots=True)
class Join:
    """Look up each element's row in `table` by the key or by `field`; the element becomes
    the pair (element, row), the row None for a left join's miss. `names` as in Select."""

    table: str
    field: tuple[str, ...] | None  # None: the stream's key
    left: bool
    names: tuple[str | None, ...]  # the element's name (or None), the row's name
    out: Type  # TupleType((element, row)), the row optional for a left join
    key: Type


@dataclass(frozen=True, slots=True)
class JoinStream:
    """A windowed join with topic `topic` by key: the element becomes the pair (element,
    other), either side None for a left or outer join's unmatched one. `names` as in Select."""

    topic: str
    how: str  # "inner", "left" or "outer"
    within_ms: int
    grace_ms: int
    late: str | None  # the topic late elements of the stream go to, else the DLQ
    text: str  # as written, for the graph
    names: tuple[str | None, ...]
    element: Type  # the element's type before the join (buffered encoded)
    out: Type  # TupleType((element, other)), optional parts per `how`
    key: Type


@dataclass(frozen=True, slots=True)
class Select:
    """Build a `record` from expressions over the element; the key is unchanged.

    `names` are the names the source gave the element's parts (`from orders as order`: one;
    after a join: the element's and the row's); a part without a name is None."""

    record: str
    fields: tuple[tuple[str, Expr], ...]  # (field, value) as written; omitted ones default
    text: str  # as written, for docstrings and the graph
    names: tuple[str | None, ...]
    out: Type  # RecordType(record)
    key: Type


@dataclass(frozen=True, slots=True)
class Filter:
    hook: str
    out: Type
    key: Type


@dataclass(frozen=True, slots=True)
class Items:
    out: Type  # TupleType((key, value))
    key: Type


@dataclass(frozen=True, slots=True)
class Events:
    out: Type  # EventType(key, value)
    key: Type


@dataclass(frozen=True, slots=True)
class To:
    """Terminal: send every element to a topic, keeping key and headers."""

    topic: str
    out: Type
    key: Type


@dataclass(frozen=True, slots=True)
class Sink:
    """Terminal: call a hook for every element. A tuple is passed as separate arguments when
    `unpack` (the hook takes as many parameters), else whole."""

    hook: str
    unpack: bool
    out: Type
    key: Type


AggKind = TypingLiteral[
    "key", "count", "count_expr", "sum", "min", "max", "avg", "first", "last", "reduce",
    "window_start", "window_end",
]


@dataclass(frozen=True, slots=True)
class Accumulate:
    """One `field = AGG` of an `aggregate`. `type` is what the aggregate yields (optional for
    min/max/avg of an optional expression and first/last of one); `field_type` the table
    field's."""

    field: str
    kind: AggKind
    expr: Expr | None  # count(EXPR), sum, min, max, avg, first, last
    hook: str | None  # reduce
    init: Default | None  # reduce
    type: Type
    field_type: Type


@dataclass(frozen=True, slots=True)
class Window:
    """The window of an aggregate; every duration in milliseconds."""

    kind: TypingLiteral["tumbling", "hopping", "session"]
    size_ms: int  # the gap of a session window
    advance_ms: int | None  # hopping only
    grace_ms: int
    text: str  # `tumbling 1m grace 10s` as written, for the graph


EmitMode = TypingLiteral["updates", "final"]


@dataclass(frozen=True, slots=True)
class Aggregate:
    """Fold each element into its key's state in `table`; pass the updated row on.

    With a window, the state is per key and window; `emit` says whether every update or only
    the final row of a closed window goes on; `late` names the topic for records whose every
    window has closed (None: the dead-letter topic)."""

    table: str
    fields: tuple[Accumulate, ...]  # as written
    text: str  # `totals { orders = count() }` as written, for docstrings and the graph
    out: Type  # the table's record
    key: Type
    window: Window | None = None
    emit: EmitMode = "updates"
    late: str | None = None  # a topic's name


@dataclass(frozen=True, slots=True)
class Distinct:
    """Drop an element whose key (or `field`) was seen within `within_ms` of event time."""

    field: tuple[str, ...] | None  # None: the key
    within_ms: int
    text: str  # as written, for the graph
    out: Type
    key: Type


Op = (
    Process
    | GroupBy
    | Take
    | Enumerate
    | Through
    | Echo
    | Where
    | Filter
    | Items
    | Events
    | To
    | Sink
    | Aggregate
    | Distinct
    | JoinStream
    | Select
    | Join
)


@dataclass(frozen=True, slots=True)
class Agent:
    name: str
    sources: tuple[str, ...]  # topic names; several when joined with `&`
    input: Type  # the element type the sources carry
    input_key: Type
    ops: tuple[Op, ...]
    text: str  # the pipeline as written, whitespace collapsed, for docstrings and the graph
    line: int  # where the agent is declared, for docstrings and the graph


@dataclass(frozen=True, slots=True)
class Program:
    app: str  # names the consumer group, the package and every internal topic
    source_name: str  # the .sdl file's own name, without its folder, for headers
    records: tuple[Record, ...]  # ordered so every record comes after the records it nests
    topics: tuple[Topic, ...]  # declared first in source order, then implicit, then repartition
    hook_modules: tuple[HookModule, ...]
    hooks: tuple[Hook, ...]
    agents: tuple[Agent, ...]  # in source order
    helper_modules: tuple[HelperModule, ...] = ()  # by module name
    tables: tuple[Table, ...] = ()  # tables an aggregate fills or a topic holds, source order
    # Python packages the hooks need (`requires`): PEP 508 strings, normalised, in source order
    requires: tuple[str, ...] = ()

    def topic(self, name: str) -> Topic:
        for topic in self.topics:
            if topic.name == name:
                return topic
        raise KeyError(name)

    def table(self, name: str) -> Table:
        for table in self.tables:
            if table.name == name:
                return table
        raise KeyError(name)

    def record(self, name: str) -> Record:
        for record in self.records:
            if record.name == name:
                return record
        raise KeyError(name)

    def hook(self, name: str) -> Hook:
        for hook in self.hooks:
            if hook.name == name:
                return hook
        raise KeyError(name)
