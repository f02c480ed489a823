"""`Stream[T]`, its operations, and `Event`: what an agent body iterates.

A stream is a linked chain of nodes. The root (`SourceStream`) is a bounded buffer of `Event`s the
Conductor fills; every operation is a node pulling from the one before it. Internally a node
yields *elements*: `(value, carrier)`, where the carrier is the `Event` (or, after `take`, the
list of `Event`s) the value came from, so acks follow values through `process`, `take`,
`enumerate` and the rest. Only the node an agent iterates acks, when the agent advances: the
carriers of intermediate nodes travel downstream unacked. Pulls never wait for data; they return
`EMPTY` and the iterating loop waits on the root buffer (with a deadline if a `take` has a
partial batch), so a timeout never cancels half-processed work.

Each node has at most one downstream node and building the same operation on it again returns
the existing node: when an agent body raises, the Worker dead-letters and acks the current
element and calls the body again with the same stream, and the rebuilt chain resumes after the
failed element.

Hooks (processors, filters, key functions) that raise, or whose result does not have the type
their `returns` declares, send the element to the dead-letter topic and the stream moves on; the
body never sees it. Any exception but a cancellation counts (`SystemExit`, `KeyboardInterrupt`
and other `BaseException`s raised by a hook too): a hook cannot end the worker with the element
acked, nor make it crash-loop on that element.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from bisect import bisect_right
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from functools import partial
from operator import attrgetter, length_hint
from types import GeneratorType, TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeGuard, TypeVar, cast, final

import msgspec

from .hooks import result_check
from .latency import Latency
from .offsets import PartitionOffsets
from .transport import HANDOUT_RUN, Headers, Message, RecordTooLargeError

if TYPE_CHECKING:
    from .state.table import Table
    from .topic import Topic
    from .worker import Worker

__all__ = ["EMPTY", "Event", "Run", "SourceStream", "Stream", "awaitable"]

T = TypeVar("T")
U = TypeVar("U")
KT = TypeVar("KT")
VT = TypeVar("VT")


# `Event._key` before the key is decoded.
_UNDECODED: Any = object()


class Event(msgspec.Struct, Generic[KT, VT], eq=False):
    """One message as delivered to one stream: decoded key and value plus the raw `message`.

    Acked automatically when the agent advances past it, when the agent raises while handling
    it, and at shutdown once handled; `await event.ack()` and `async with event:` ack early
    (a block left by an exception does not ack: the element is dead-lettered, then acked).
    Acking twice is harmless.

    The key is decoded on first use (`key`), since most pipelines never read it. The Conductor
    only leaves it undecoded when decoding cannot fail (raw bytes, or ASCII text for a `str`
    key), so a key that does not decode is still dead-lettered on arrival, never later.

    A `msgspec.Struct` (compared by identity, `eq=False`) because one is made per message per
    stream: its constructor runs in C, about a third of a Python `__init__`'s cost.
    """

    message: Message
    value: VT
    _offsets: PartitionOffsets
    _kdecode: Callable[[bytes], KT] | None = None  # None: the raw key bytes are the key
    _acked: bool = False
    _key: Any = _UNDECODED  # the decoded key, once decoded (by the Conductor or on first read)

    @property
    def key(self) -> KT:
        key = self._key
        if key is _UNDECODED:
            raw = self.message.key
            decode = self._kdecode
            key = self._key = raw if raw is None or decode is None else decode(raw)
        return cast(KT, key)

    @property
    def acked(self) -> bool:
        return self._acked

    def _ack(self) -> None:
        if not self._acked:
            self._acked = True
            self._offsets.release(self.message.offset)

    async def ack(self) -> None:
        """Mark this event handled; its offset may be committed once every stream is done."""
        self._ack()

    async def __aenter__(self) -> Event[KT, VT]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Raising out of the block leaves the ack to the runtime: the body raised while
        # handling this event, so it is dead-lettered and acked once the dead letter is
        # delivered (acking here would let a commit pass it before then).
        if exc_type is None:
            self._ack()

    def __repr__(self) -> str:
        m = self.message
        return f"<Event {m.topic}[{m.partition}]@{m.offset} key={self.key!r}>"


class Chunk:
    """What the Conductor buffers for a stream a fused loop reads straight from (`chunked`):
    a run of one partition's messages and their decoded values, registered with the
    partition's offsets as one entry (see `PartitionOffsets.add_run`). No `Event`
    is made per message; a `Run` makes one only for an element that needs it (a send, a
    dead letter, the element in hand when the body raises)."""

    __slots__ = ("cut", "done", "entry", "kdecode", "later", "messages", "state", "values")

    def __init__(
        self,
        state: PartitionOffsets,
        entry: int,
        messages: list[Message],
        values: list[Any],
        kdecode: Callable[[bytes], Any] | None,
    ) -> None:
        self.state = state
        self.entry = entry  # its entry's key in `state` (changes with `advance_run`)
        self.messages = messages
        self.values = values
        self.kdecode = kdecode
        self.cut: int | None = None  # the first offset dropped on revocation, if any
        # For `take` batches over chunks (`_Batch`): every member before `done` is done, and
        # the slices done out of order after it (`lo -> hi`), so the entry moves up only
        # past a prefix that is all done.
        self.done = 0
        self.later: dict[int, int] | None = None


class Members:
    """Members of one `Chunk` (their indexes in it, ascending) sent on by a forwarding task:
    acked as one release when the run they went out in is delivered, not one by one."""

    __slots__ = ("chunk", "indexes")

    def __init__(self, chunk: Chunk, indexes: list[int]) -> None:
        self.chunk = chunk
        self.indexes = indexes

    def ack(self) -> None:
        chunk = self.chunk
        chunk.state.release_members(chunk.entry, len(self.indexes))

    def member(self, i: int) -> Event[Any, Any]:
        """An `Event` for member `i` of the chunk (to dead-letter it on its own)."""
        chunk = self.chunk
        return _Member(
            chunk.messages[i], chunk.values[i], chunk.state, chunk.kdecode, _chunk=chunk
        )


def _slice_done(chunk: Chunk, lo: int, hi: int) -> None:
    """Members `lo` to `hi` of `chunk` are done (released, or held on their own): once all
    before them are too, its entry moves up so a commit covers them as it would one by one."""
    later = chunk.later
    if lo != chunk.done:
        if later is None:
            later = chunk.later = {}
        later[lo] = hi
        return
    while later and hi in later:
        hi = later.pop(hi)
    chunk.done = hi
    first = chunk.messages[hi].offset if hi < len(chunk.messages) else chunk.cut
    if first is not None:
        chunk.entry = chunk.state.advance_run(chunk.entry, first)


def _bounds(chunks: list[Chunk]) -> list[int]:
    if len(chunks) == 1:  # most runs are one chunk
        return [0]
    bounds = []
    n = 0
    for chunk in chunks:
        bounds.append(n)
        n += len(chunk.messages)
    return bounds


class _Member(Event[Any, Any], eq=False):
    """An `Event` for one element of a `Chunk`: its own ack is one of its run's members."""

    _chunk: Any = None

    def _ack(self) -> None:
        if not self._acked:
            self._acked = True
            chunk = self._chunk
            chunk.state.release_members(chunk.entry, 1)


class _Batch(list[Event[Any, Any]]):
    """A `take` batch read straight from chunks: slices `(chunk, lo, hi)` of them, acked with
    one release per slice. Its events are made only when something walks them (a send, a
    dead letter, a forward's key): then each is a `_BatchMember`."""

    __slots__ = ("_acked", "_filled", "_left", "parts")

    def __init__(self, parts: list[tuple[Chunk, int, int]]) -> None:
        super().__init__()
        self.parts = parts
        self._acked = False
        self._filled = False
        self._left = 0  # members not acked on their own (once filled)

    def _fill(self) -> None:
        if self._filled:
            return
        self._filled = True
        acked = self._acked
        members = [
            _BatchMember(
                chunk.messages[i],
                chunk.values[i],
                chunk.state,
                chunk.kdecode,
                acked,
                _chunk=chunk,
                _batch=self,
            )
            for chunk, lo, hi in self.parts
            for i in range(lo, hi)
        ]
        self._left = 0 if acked else len(members)
        list.extend(self, members)

    def __iter__(self) -> Iterator[Event[Any, Any]]:
        self._fill()
        return list.__iter__(self)

    def __len__(self) -> int:
        self._fill()
        return list.__len__(self)

    def __getitem__(self, i: Any) -> Any:
        self._fill()
        return list.__getitem__(self, i)

    def messages(self) -> Iterator[Message]:
        for chunk, lo, hi in self.parts:
            yield from chunk.messages[lo:hi]

    def ack(self) -> None:
        if self._acked:
            return
        self._acked = True
        members = list.__iter__(self) if self._filled else None  # in the parts' order
        for chunk, lo, hi in self.parts:
            count = hi - lo
            if members is not None:
                for _ in range(lo, hi):
                    event = next(members)
                    if event._acked:
                        count -= 1  # dead-lettered: released on its own
                    else:
                        event._acked = True
            if count:
                chunk.state.release_members(chunk.entry, count)
        self._settle()

    def _settle(self) -> None:
        for chunk, lo, hi in self.parts:
            _slice_done(chunk, lo, hi)


class _BatchMember(_Member, eq=False):
    """A member of a `_Batch` acked on its own (dead-lettered): once all are, so is the batch."""

    _batch: Any = None

    def _ack(self) -> None:
        if not self._acked:
            self._acked = True
            chunk = self._chunk
            chunk.state.release_members(chunk.entry, 1)
            batch = self._batch
            batch._left -= 1
            if not batch._left and not batch._acked:
                batch._acked = True
                batch._settle()


Carrier = Event[Any, Any] | list[Event[Any, Any]]


def carrier_events(carrier: Carrier) -> list[Event[Any, Any]]:
    return carrier if isinstance(carrier, list) else [carrier]


def ack_carrier(carrier: Carrier) -> None:
    if isinstance(carrier, list):
        if type(carrier) is _Batch:
            carrier.ack()
            return
        for event in carrier:  # `event._ack()`, inlined: batches are acked event by event
            if type(event) is not Event:
                event._ack()  # a member of a run (a nested `take`'s batch): its own release
            elif not event._acked:
                event._acked = True
                event._offsets.release(event.message.offset)
    else:
        carrier._ack()


def forwarded_key_headers(carrier: Carrier) -> tuple[bytes | None, Headers]:
    """The raw key and headers a forwarded element keeps: its message's, or for a batch the
    key all its messages share (else none) and no headers."""
    if isinstance(carrier, Event):
        message = carrier.message
        return message.key, message.headers
    if type(carrier) is _Batch:  # without making its events
        keys = {m.key for m in carrier.messages()}
        return (keys.pop() if len(keys) == 1 else None), ()
    first = carrier[0].message.key if carrier else None
    return (first if all(e.message.key == first for e in carrier) else None), ()


POSITION_HEADER = "streamc.position"


def positioned(message: Message, headers: Headers) -> Headers:
    """`headers` with the message's source position (`<topic>:<partition>:<offset>`) added,
    unless they carry one already (from further upstream: that one is the source)."""
    for name, _ in headers:
        if name == POSITION_HEADER:
            return headers
    mark = f"{message.topic}:{message.partition}:{message.offset}".encode()
    return (*headers, (POSITION_HEADER, mark))


def forwarded_timestamp(carrier: Carrier) -> int | None:
    """The timestamp a forwarded element keeps (milliseconds): its message's, or for a batch
    the latest of its messages' (as Kafka Streams does); None when there is none to keep."""
    if isinstance(carrier, Event):
        return carrier.message.timestamp
    if type(carrier) is _Batch:
        return max((m.timestamp for m in carrier.messages()), default=None)
    return max((e.message.timestamp for e in carrier), default=None)


@final
class _Empty:
    """No element available right now (not end of stream)."""

    def __repr__(self) -> str:
        return "EMPTY"


EMPTY = _Empty()
Element = tuple[Any, Carrier]
Pulled = Element | _Empty


def _is_async(fn: Callable[..., Any]) -> bool:
    """Whether calling `fn` returns an awaitable; decided once, when the stream is built."""
    target: Any = fn
    while hasattr(target, "func"):  # functools.partial
        target = target.func
    return inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(
        getattr(target, "__call__", None)  # noqa: B004 - an object with `async def __call__`
    )


def _hook_name(fn: Callable[..., Any]) -> str:
    return str(getattr(fn, "__name__", None) or fn)


def _checks(
    fns: tuple[Callable[[Any], Any], ...], returns: Sequence[Any] | None
) -> list[Callable[[Any], Any] | None]:
    if returns is None:
        return [None] * len(fns)
    return [result_check(t, _hook_name(fn)) for fn, t in zip(fns, returns, strict=True)]


# Types whose instances `inspect.isawaitable` rejected. That check costs about 0.5 µs (an ABC
# isinstance) and ran for every element through every sync hook, twice per element in a
# `process` then `group_by`. Awaitability is decided by the type (`await` needs `__await__` on
# it), except for generators, which `types.coroutine` makes awaitable per code object: those
# are never cached. The set is bounded by the types the hooks return.
_NOT_AWAITABLE: set[type] = set()


async def _settle(result: Any, is_async: bool) -> Any:
    """The final value of a hook's `result`: awaited if it is awaitable. Hot loops call a hook
    themselves and come here only when `is_async or type(result) not in _NOT_AWAITABLE`, so a
    sync hook costs no coroutine per element."""
    if is_async:
        return await result
    kind = type(result)
    if inspect.isawaitable(result):  # a sync hook may still return an awaitable
        return await result
    if kind is not GeneratorType:
        _NOT_AWAITABLE.add(kind)
    return result


def awaitable(result: object) -> TypeGuard[Awaitable[Any]]:
    """Whether a hook's `result` must be awaited: generated fused loops call sync hooks
    directly and await only what this says is awaitable (a plain `def` may hand back a
    coroutine). Cached by type like `_settle`, so a sync hook's result costs a set lookup."""
    kind = type(result)
    if kind in _NOT_AWAITABLE:
        return False
    if inspect.isawaitable(result):
        return True
    if kind is not GeneratorType:
        _NOT_AWAITABLE.add(kind)
    return False


class Stream(Generic[T]):
    """An async iterable of `T`, with Faust's operations. Do not construct directly."""

    _op = "stream"
    # Whether this node's values may differ from the decoded values of their carriers'
    # messages: a processor's result (even the same object, changed in place), a batch, a pair.
    _changes_values = False

    def __init__(
        self, worker: Worker, up: Stream[Any] | None, source: SourceStream[Any] | None
    ) -> None:
        self._worker = worker
        self._up = up
        # The buffer this node ultimately reads from; waiting happens there.
        self._source: SourceStream[Any] = (
            source if source is not None else cast("SourceStream[Any]", self)
        )
        self._agent: str = up._agent if up is not None else ""
        self._down: Stream[Any] | None = None
        self._current: Carrier | None = None  # the element the agent is handling

    # -- building -------------------------------------------------------------------------
    def _then(self, op: str, make: Callable[[], Stream[U]]) -> Stream[U]:
        down = self._down
        if down is not None:
            if down._op != op:
                raise ValueError(
                    f"stream of agent {self._agent!r} already continues with {down._op}(); "
                    f"a stream has one downstream operation, cannot add {op}()"
                )
            return cast(Stream[U], down)
        node = make()
        self._down = node
        return node

    def process(
        self, *fns: Callable[[Any], Any], returns: Sequence[Any] | None = None
    ) -> Stream[Any]:
        """Apply processors in order (each sync or async) to every value. With `returns` (one
        declared type per processor) each result is checked: a mismatch dead-letters the
        element."""
        if returns is not None and len(returns) != len(fns):
            raise ValueError(f"process: {len(fns)} processors but {len(returns)} result types")
        return self._then("process", lambda: _Process(self, fns, returns))

    def filter(self, pred: Callable[[T], Any], *, returns: Any = None) -> Stream[T]:
        """Keep values for which `pred` (sync or async) is true; the others are acked. With
        `returns=bool`, a result that is not a bool (a forgotten `return` gives None, which
        would drop every element) dead-letters the element."""
        return self._then("filter", lambda: _Filter(self, pred, returns))

    def group_by(
        self, key: Callable[[T], Any] | str, *, topic: Topic[Any], returns: Any = None
    ) -> Stream[T]:
        """Re-key by `key` (a sync/async function or a field name) through the repartition
        `topic`; the returned stream reads that topic, so equal keys meet on one partition.
        With `returns` (the key function's declared type), a key of another type (None, a
        float or a bool for an `int`) dead-letters the element instead of mis-partitioning."""
        key_fn = attrgetter(key) if isinstance(key, str) else key
        check = None if returns is None else result_check(returns, _hook_name(key_fn))
        return self._then("group_by", lambda: _Forward(self, topic, key_fn, "group_by", check))

    def take(self, n: int, *, within: float | None = None) -> Stream[list[T]]:
        """Batches of at most `n` values, never empty; with `within`, a partial batch is emitted
        at most `within` seconds after its first value arrived. Its events are acked only after
        the batch has been handled."""
        if n < 1:
            raise ValueError(f"take: n must be >= 1, got {n}")
        if within is not None and within <= 0:
            raise ValueError(f"take: within must be > 0, got {within}")
        return self._then("take", lambda: _Take(self, n, within))

    def enumerate(self, start: int = 0) -> Stream[tuple[int, T]]:
        """`(count, value)` pairs; the count survives agent restarts."""
        return self._then("enumerate", lambda: _Enumerate(self, start))

    def through(self, topic: Topic[Any]) -> Stream[T]:
        """Send every value to `topic` (keeping key and headers) and continue from that topic."""
        return self._then("through", lambda: _Forward(self, topic, None, "through"))

    def echo(self, *topics: Topic[Any]) -> Stream[T]:
        """Send a copy of every value to each topic (keeping key and headers) and continue with
        the same values; a source event is done only once its copies are delivered."""
        return self._then("echo", lambda: _Echo(self, topics, "echo"))

    def to(self, topic: Topic[Any]) -> Stream[T]:
        """Send every value to `topic`; meant as the last operation (`async for _ in ...: pass`)."""
        return self._then("to", lambda: _Echo(self, (topic,), "to"))

    def aggregate(
        self,
        table: Table[Any, Any],
        *,
        fold: Callable[[Any, Any], Any],
        row: Callable[..., Any],
        returns: Mapping[str, tuple[Callable[..., Any], Any]] | None = None,
        emit: str = "updates",
        late: Topic[Any] | None = None,
        merge: Callable[[Any, Any], Any] | None = None,
    ) -> Stream[Any]:
        """Fold every value into its key's state in `table` (`fold(state, value)` returns the
        new state, sync or async) and continue with `row(key, state)`, a new record each time.
        Exact across crashes (the skip rule, `streamc_runtime.state.aggregate`).

        `returns`: for each state attribute a reduce hook sets, `(hook, declared type)`. The
        attribute is checked after each fold (as processors' results are): a state of the
        wrong type would be written to the changelog and break the next restore, so the
        element is dead-lettered instead (`HookResultError`) and the state left as it was.

        A windowed table (`App.table(..., window=)`) folds into each window of the element's
        event time and its row is `row(key, window, state)`: with `emit="updates"` after every
        fold, with `emit="final"` once, when the window closes. Late elements go to `late`
        (else the dead-letter topic); session windows combine states with `merge(a, b)`."""
        checks = [
            (attr, result_check(type_, _hook_name(hook)))
            for attr, (hook, type_) in (returns or {}).items()
        ]
        if table.window is not None:
            from .state.windows import WindowedAggregate

            return self._then(
                "aggregate",
                lambda: WindowedAggregate(self, table, fold, row, emit, late, merge, checks),
            )
        if (emit, late, merge) != ("updates", None, None):
            raise ValueError(f"table {table.name!r} has no window: emit, late, merge need one")
        from .state.aggregate import Aggregate

        return self._then("aggregate", lambda: Aggregate(self, table, fold, row, checks))

    def join(
        self,
        table: Table[Any, Any],
        *,
        on: Callable[[T], Any] | None = None,
        left: bool = False,
    ) -> Stream[tuple[T, Any]]:
        """`(value, row)`: the row of `table` under the element's key (`on=None`) or under
        `on(value)`; the key is unchanged. A miss drops the element, or with `left=True`
        passes `(value, None)`. Waits for the partition's store to be restored, like
        `aggregate` (`streamc_runtime.state.join`)."""
        from .state.join import StreamJoin

        return self._then("join", lambda: StreamJoin(self, table, on, left))

    def join_stream(
        self,
        other: Topic[Any],
        *,
        within: int,
        grace: int = 0,
        how: str = "inner",
        value_type: Any = None,
        late: Topic[Any] | None = None,
    ) -> Stream[tuple[Any, Any]]:
        """`(value, record)` for each record of topic `other` with the element's key and an
        event time at most `within` ms from the element's, emitted when the second of the two
        arrives. `how="left"` also emits `(value, None)` for an element that found none once
        its window closed (stream time past its time + within + `grace`), `how="outer"`
        likewise `(None, record)`. Elements more than `grace` ms behind stream time are late
        (`late`, else the dead-letter topic). `value_type`: the element's type (its values are
        buffered encoded), by default the source topic's (`streamc_runtime.state.stream_join`)."""
        from .state.stream_join import StreamStreamJoin

        return self._then(
            "join_stream",
            lambda: StreamStreamJoin(self, other, within, grace, how, value_type, late),
        )

    def distinct(
        self, *, within: int, field: Callable[[T], Any] | None = None
    ) -> Stream[T]:
        """Drop a value whose key (or `field(value)`) was let through less than `within`
        ms of event time before or after it, on its partition. Stateful and exact across
        crashes like a table (`streamc_runtime.state.distinct`)."""
        from .state.distinct import Distinct

        return self._then("distinct", lambda: Distinct(self, within, field))

    def runs(self, *, counters: Sequence[int] = ()) -> Stream[Run[T]]:
        """The values in runs (`Run`), for a generated loop that handles a whole run in one
        plain `for`: one async step and one ack per run instead of per element. `counters`:
        the start of each `enumerate` the loop numbers with (`Run.count`); the counts survive
        the body's restarts."""
        return self._then("runs", lambda: _Runs(self, counters))

    def items(self) -> Stream[tuple[Any, T]]:
        """`(key, value)` pairs."""
        return self._then("items", lambda: _Items(self))

    def events(self) -> Stream[Event[Any, T]]:
        """The `Event`s themselves (raw message, decoded key and value, manual ack)."""
        return self._then("events", lambda: _Events(self))

    # -- iterating ------------------------------------------------------------------------
    async def _pull(self) -> Pulled:
        raise NotImplementedError

    async def _pull_many(self, most: int) -> tuple[list[Any], list[Carrier]]:
        """Up to `most` elements, as many as this node has at hand (none: nothing is), as
        values and carriers. Nodes that hold a folded run hand it over at once."""
        pull = self._pull
        values: list[Any] = []
        carriers: list[Carrier] = []
        while len(values) < most:
            element = await pull()
            if element is EMPTY:
                break
            value, carrier = cast(Element, element)
            values.append(value)
            carriers.append(carrier)
        return values, carriers

    def _deadline(self) -> float | None:
        """The loop time at which this node wants to be pulled again even without new data."""
        return None if self._up is None else self._up._deadline()

    def _may_wait(self) -> bool:
        """Whether a pull from this node may wait on something other than the buffer (an async
        hook, a send): the forwarding task then sends what it holds before pulling again."""
        return False if self._up is None else self._up._may_wait()

    def _unchanged(self) -> bool:
        """Whether every value this node yields is still the decoded value of its carrier's
        message, as the source decoded it: decided once, by the operations in the chain."""
        return not self._changes_values and (self._up is None or self._up._unchanged())

    def _read_in_runs(self) -> None:
        """A fused loop (`runs()`) is built on this node: its carriers go nowhere else. A node
        that takes runs from its source buffer (`aggregate`) may then have it hold `Chunk`s."""

    def __aiter__(self) -> Stream[T]:
        return self

    async def __anext__(self) -> T:
        current = self._current
        if current is not None:
            self._current = None
            ack_carrier(current)
        source = self._source
        pull = self._pull
        while True:
            element = await pull()
            if element is not EMPTY:
                value, self._current = cast(Element, element)
                return cast(T, value)
            if source.closed:
                raise StopAsyncIteration
            await source.wait(self._deadline())

    def _chain(self) -> Iterator[Stream[Any]]:
        node: Stream[Any] | None = self
        while node is not None:
            yield node
            node = node._down

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of agent {self._agent!r}>"


# An agent taking events from its buffer yields to the event loop once it has run this long
# (seconds) without a yield, looking at the clock every `_CHECK_EVERY` events (see
# `SourceStream.share_loop`).
_YIELD_AFTER = 0.01
_CHECK_EVERY = 64


async def _next_source_value(node: Stream[Any]) -> Any:
    """`async for value in node` where `node` hands over its `source`'s events as they are (the
    source itself, or the read-back side of `group_by`/`through`): the common path, inlined,
    with the ack of the previous event (always a single Event here) done in place. It is the
    `__anext__` of both, not called from one: a coroutine frame per element is measurable."""
    source = node._source
    if source.sample:
        source.sample_tick()
    current = node._current
    if current is not None:
        node._current = None
        if not current._acked:  # type: ignore[union-attr]
            current._acked = True  # type: ignore[union-attr]
            current._offsets.release(current.message.offset)  # type: ignore[union-attr]
    left = source.until_check - 1
    if left:
        source.until_check = left
    else:
        await source.share_loop()
    buffer = source.buffer
    while not buffer:
        if source.closed:
            raise StopAsyncIteration
        await source.wait(None)
    event = buffer.popleft()
    if source.full and len(buffer) <= source.low:
        source._worker.conductor.drained(source)
    node._current = event
    return event.value


class SourceStream(Stream[T]):
    """The root of a chain: a bounded buffer of events from one or more topics (`&`)."""

    _op = "source"

    def __init__(self, worker: Worker, topics: tuple[Topic[Any], ...], agent: str) -> None:
        super().__init__(worker, None, None)
        self._agent = agent
        self.topics = topics
        self.buffer: deque[Event[Any, Any]] = deque()
        # Set once a fused loop reads straight from this stream (`runs()`): the buffer then
        # holds `Chunk`s, `size` counting their messages.
        self.chunked = False
        self.size = 0
        self.capacity = worker.buffer_size
        self.low = max(worker.buffer_size // 2, 1)  # drained: resume the paused partitions
        self.full = False  # back-pressure engaged: the Conductor paused our partitions
        self.closed = False
        # Events handed out until `share_loop` looks at the clock, how many that was, when it
        # last looked and when it last yielded.
        self.until_check = _CHECK_EVERY
        self._check_every = _CHECK_EVERY
        self._checked_at = 0.0
        self._yielded_at = 0.0
        self._waiters: list[asyncio.Future[None]] = []
        self._loop = asyncio.get_running_loop()
        # For metrics, kept per dispatched batch rather than per element: events that entered
        # the buffer, and those dropped from it unread (revocation, stop).
        self.entered = 0
        self.dropped = 0
        # Sampled processing time: a sampler sets `sample`; the next element handed out is
        # timed until the agent asks for the one after it (one flag test per element).
        self.sample = False
        self.latency = Latency()
        self._sample_t0 = 0.0
        self._sample_n = 1  # elements the timed stretch holds (a node taking runs: `sample_run`)

    __anext__ = _next_source_value

    def sample_tick(self) -> None:
        now = time.perf_counter()
        if self._sample_t0:
            self.latency.observe((now - self._sample_t0) / self._sample_n)
            self._sample_t0 = 0.0
            self.sample = False
        elif self.buffer:  # an element is handed out now, without waiting: time it
            self._sample_t0 = now
            self._sample_n = 1

    def sample_run(self, taken: int) -> bool:
        """`sample_tick` for a node that takes its elements in runs (`aggregate`), called as
        it takes a run of `taken`: ends the timed run, each of its elements timed at its share
        of the run (True), else times this one if it holds any (False)."""
        now = time.perf_counter()
        if self._sample_t0:
            self.latency.observe((now - self._sample_t0) / self._sample_n)
            self._sample_t0 = 0.0
            self.sample = False
            return True
        if taken:
            self._sample_t0 = now
            self._sample_n = taken
        return False

    async def _pull(self) -> Pulled:
        if self.sample:
            self.sample_tick()
        left = self.until_check - 1
        if left:
            self.until_check = left
        else:
            await self.share_loop()
        buffer = self.buffer
        if not buffer:
            return EMPTY
        event = buffer.popleft()
        if self.full and len(buffer) <= self.low:
            self._worker.conductor.drained(self)
        return (event.value, event)

    async def share_loop(self) -> None:
        """Yield to the event loop if the agent has run `_YIELD_AFTER` seconds without.

        An agent with events buffered never waits, so a slow (CPU-bound) body would keep the
        fetch loop, the producer's sends and the commit loop from running for a whole buffer
        of events. A yield per event (or every few) costs a fast agent a third of its speed;
        a look at the clock every `_CHECK_EVERY` events costs nothing. A slow body looks
        sooner: after as many events as took half of `_YIELD_AFTER` at the pace just seen. At
        a millisecond an event, 64 events held the loop for 64 ms a turn, and a commit (a
        flush, then the commit request: a dozen turns of the loop) took a second."""
        now = self._loop.time()
        spent = now - self._checked_at
        n = self._check_every
        if spent * 2 * _CHECK_EVERY > _YIELD_AFTER * n:  # slower than _CHECK_EVERY per 5 ms
            n = max(1, int(n * _YIELD_AFTER / (2 * spent)))
        else:
            n = _CHECK_EVERY
        self.until_check = self._check_every = n
        self._checked_at = now
        if now - self._yielded_at >= _YIELD_AFTER:
            await asyncio.sleep(0)
            # The pace is the body's own: what other tasks did meanwhile does not count.
            self._yielded_at = self._checked_at = self._loop.time()

    def wake(self) -> None:
        waiters = self._waiters
        if waiters:
            self._waiters = []
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)

    async def wait(self, deadline: float | None) -> None:
        """Until the buffer has data, the stream closes, a drain is requested or `deadline`."""
        if self.buffer or self.closed:
            return
        loop = self._loop
        fut: asyncio.Future[None] = loop.create_future()
        handle = None
        if deadline is not None:
            delay = deadline - loop.time()
            if delay <= 0:
                return
            handle = loop.call_later(delay, _resolve, fut)
        self._waiters.append(fut)
        worker = self._worker
        worker.waiting += 1
        try:
            await fut
        finally:
            worker.waiting -= 1
            if handle is not None:
                handle.cancel()

    def buffered(self) -> int:
        """Messages waiting in the buffer."""
        return self.size if self.chunked else len(self.buffer)

    def chunk(self) -> None:
        """From now on the Conductor buffers `Chunk`s; events already buffered become
        chunks of one (each still registered on its own)."""
        if self.chunked:
            return
        self.chunked = True
        events = list(self.buffer)
        self.buffer.clear()
        chunks = cast("deque[Any]", self.buffer)
        for e in events:
            m = e.message
            chunks.append(Chunk(e._offsets, m.offset, [m], [e.value], e._kdecode))
        self.size = len(events)

    def close(self) -> None:
        """Stop delivering: buffered events are abandoned unacked (redelivered after restart)."""
        self.closed = True
        self.dropped += self.buffered()
        if self.chunked:
            # A chunk's rest a forward or an aggregate cut shares its entry with the head they
            # took and still finish: the stop's commit covers that head (`abandon`).
            for chunk in cast("deque[Chunk]", self.buffer):
                chunk.state.abandon(chunk.entry, len(chunk.messages), chunk.messages[0].offset)
        self.buffer.clear()
        self.size = 0
        self.wake()

    def _deadline(self) -> float | None:
        return None


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class _Process(Stream[Any]):
    _op = "process"
    _changes_values = True

    def __init__(
        self,
        up: Stream[Any],
        fns: tuple[Callable[[Any], Any], ...],
        returns: Sequence[Any] | None,
    ) -> None:
        super().__init__(up._worker, up, up._source)
        self._fns = [
            (fn, _is_async(fn), check) for fn, check in zip(fns, _checks(fns, returns), strict=True)
        ]
        self._waits = any(is_async for _, is_async, _ in self._fns)  # or a sync one returned one

    def _may_wait(self) -> bool:
        return self._waits or super()._may_wait()

    async def _pull(self) -> Pulled:
        up = self._up
        assert up is not None
        while True:
            element = await up._pull()
            if element is EMPTY:
                return element
            value, carrier = cast(Element, element)
            try:
                for fn, is_async, check in self._fns:
                    value = fn(value)
                    if is_async or type(value) not in _NOT_AWAITABLE:
                        if not is_async and inspect.isawaitable(value):
                            self._waits = True
                        value = await _settle(value, is_async)
                    if check is not None:
                        value = check(value)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # a hook's SystemExit too: see the module docstring
                await self._worker.dead_letter(carrier, exc, self._agent)
                continue
            return (value, carrier)


class _Filter(Stream[Any]):
    _op = "filter"

    def __init__(self, up: Stream[Any], pred: Callable[[Any], Any], returns: Any) -> None:
        super().__init__(up._worker, up, up._source)
        self._pred = pred
        self._check = None if returns is None else result_check(returns, _hook_name(pred))
        self._async = _is_async(pred)
        self._waits = self._async  # or the sync predicate returned an awaitable

    def _may_wait(self) -> bool:
        return self._waits or super()._may_wait()

    async def _pull(self) -> Pulled:
        up = self._up
        assert up is not None
        pred, is_async, check = self._pred, self._async, self._check
        while True:
            element = await up._pull()
            if element is EMPTY:
                return element
            value, carrier = cast(Element, element)
            try:
                keep = pred(value)
                if is_async or type(keep) not in _NOT_AWAITABLE:
                    if not is_async and inspect.isawaitable(keep):
                        self._waits = True
                    keep = await _settle(keep, is_async)
                if check is not None:
                    keep = check(keep)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # a hook's SystemExit too: see the module docstring
                await self._worker.dead_letter(carrier, exc, self._agent)
                continue
            if keep:
                return element
            ack_carrier(carrier)  # filtered out: handled


class _Take(Stream[list[Any]]):
    _op = "take"
    _changes_values = True

    def __init__(self, up: Stream[Any], n: int, within: float | None) -> None:
        super().__init__(up._worker, up, up._source)
        self._n = n
        self._within = within
        self._values: list[Any] = []
        self._events: list[Event[Any, Any]] = []
        self._due: float | None = None  # loop time the partial batch must go out by
        self._epoch = 0  # the worker's drain epoch when this batch started
        self._loop = asyncio.get_running_loop()
        self._worker.takes.append(self)
        # Straight from the source, batches are slices of `Chunk`s (`_Batch`): no `Event`
        # and no offset entry per message. `_rest` is a chunk a full batch cut, and where.
        self._parts: list[tuple[Chunk, int, int]] | None = None
        self._rest: tuple[Chunk, int] | None = None
        if up is up._source:
            self._source.chunk()
            self._parts = []

    @property
    def pending(self) -> int:
        """Values held in the partial batch."""
        return len(self._values)

    def _deadline(self) -> float | None:
        if self._values and self._due is not None:
            return self._due
        return super()._deadline()

    def abandon(self, revoked: frozenset[Any]) -> None:
        """Drop values of revoked partitions from the partial batch (never handed to the agent,
        so the partitions' new owner will handle them)."""
        if self._parts is not None:
            self._abandon_parts(revoked)
            return
        values, events = self._values, self._events
        if not values or len(values) != len(events):  # nested batches: keep (at-least-once)
            return
        keep = []
        for i, e in enumerate(events):
            if (e.message.topic, e.message.partition) in revoked:
                e._offsets.abandon(e.message.offset)
            else:
                keep.append(i)
        if len(keep) != len(values):
            # in place: a running `_pull` holds these very lists
            values[:] = [values[i] for i in keep]
            events[:] = [events[i] for i in keep]
            if not values:
                self._due = None

    def _abandon_parts(self, revoked: frozenset[Any]) -> None:
        # What a revoked partition has in the partial batch and the cut chunk is the tail of
        # its chunk: dropped, and the chunk cut there, so once all before is done a commit
        # reaches the first member dropped.
        parts, values = self._parts, self._values
        assert parts is not None
        rest = self._rest
        if rest is not None and _revoked(rest[0], revoked):
            self._rest = None
            self._source.dropped += len(rest[0].values) - rest[1]  # as if still buffered
            self._cut(rest[0], rest[1])
        if not values:
            return
        kept_parts: list[tuple[Chunk, int, int]] = []
        kept: list[Any] = []
        b = 0
        for part in parts:
            chunk, lo, hi = part
            if _revoked(chunk, revoked):
                self._cut(chunk, lo)
            else:
                kept_parts.append(part)
                kept += values[b : b + hi - lo]
            b += hi - lo
        if len(kept) != len(values):
            # in place: a running `_pull` holds these very lists
            parts[:] = kept_parts
            values[:] = kept
            if not values:
                self._due = None

    def _cut(self, chunk: Chunk, start: int) -> None:
        """Drop members `start` on of a revoked chunk: never handed to the agent."""
        n = len(chunk.messages)
        chunk.state.abandon(chunk.entry, n - start)
        chunk.cut = chunk.messages[start].offset
        del chunk.messages[start:]
        if start and chunk.done == start:
            _slice_done(chunk, start, start)  # all before is done: the entry moves to the cut

    def _begin_batch(self) -> None:
        """The first value of a batch is in: note the drain epoch and start the `within` clock."""
        self._epoch = self._worker.drain_epoch
        if self._within is not None:
            self._due = self._loop.time() + self._within

    def _emit(self) -> Element:
        values, events, parts = self._values, self._events, self._parts
        self._values, self._events, self._due = [], [], None
        self._worker.batches += 1
        if parts is not None:
            self._parts = []
            return (values, _Batch(parts))
        return (values, events)

    def _take_chunks(self) -> bool:
        """Fill the batch from the source's chunks; whether it is due (full, or `within`
        passed). A chunk longer than the batch needs is cut: the batch takes its slice and
        the rest waits in `_rest` for the next one."""
        n, values, parts = self._n, self._values, self._parts
        assert parts is not None
        source = self._source
        chunks: deque[Chunk] = source.buffer  # type: ignore[assignment]
        rest = self._rest
        if rest is not None and source.closed:  # stopping: unstarted, as the buffer is
            source.dropped += len(rest[0].values) - rest[1]
            self._rest = rest = None
        while len(values) < n:
            if rest is not None:
                chunk, lo = rest
                self._rest = rest = None
            elif chunks:
                chunk, lo = chunks.popleft(), 0
                source.size -= len(chunk.values)
                if source.full and source.size <= source.low:
                    self._worker.conductor.drained(source)
            else:
                return False
            if not values:
                self._begin_batch()
            hi = min(len(chunk.values), lo + n - len(values))
            values += chunk.values[lo:hi] if lo or hi < len(chunk.values) else chunk.values
            parts.append((chunk, lo, hi))
            if hi < len(chunk.values):
                self._rest = (chunk, hi)
            if self._due is not None and self._loop.time() >= self._due:
                return True
        return True

    async def _pull(self) -> Pulled:
        up = self._up
        assert up is not None
        n, loop = self._n, self._loop
        values, events = self._values, self._events
        source = self._source
        if self._parts is not None:
            if self._take_chunks():
                return self._emit()
            if not values:
                return EMPTY
            if (
                (self._due is not None and loop.time() >= self._due)
                or source.closed  # stopping: hand over the partial batch, then ack it
                or self._worker.drain_epoch > self._epoch  # `run_local` draining
            ):
                return self._emit()
            return EMPTY
        while len(values) < n:
            if up is source:
                # Straight from the buffer: a run of events per step, with no element tuple
                # and no coroutine each.
                buffer = source.buffer
                if buffer:
                    if not values:
                        self._begin_batch()
                    for _ in range(min(n - len(values), len(buffer))):
                        event = buffer.popleft()
                        values.append(event.value)
                        events.append(event)
                    if source.full and len(buffer) <= source.low:
                        self._worker.conductor.drained(source)
                    if self._due is not None and loop.time() >= self._due:
                        break
                    continue
                element: Pulled = EMPTY
            else:
                element = await up._pull()
            if element is EMPTY:
                if not values:
                    return element
                if (
                    (self._due is not None and loop.time() >= self._due)
                    or self._source.closed  # stopping: hand over the partial batch, then ack it
                    or self._worker.drain_epoch > self._epoch  # `run_local` draining
                ):
                    break
                return element
            value, carrier = cast(Element, element)
            if not values:
                self._begin_batch()
            values.append(value)
            if isinstance(carrier, list):
                events.extend(carrier)
            else:
                events.append(carrier)
            if self._due is not None and loop.time() >= self._due:
                break
        return self._emit()


def _revoked(chunk: Chunk, revoked: frozenset[Any]) -> bool:
    m = chunk.messages[0]
    return (m.topic, m.partition) in revoked


class _Enumerate(Stream[tuple[int, Any]]):
    _op = "enumerate"
    _changes_values = True

    def __init__(self, up: Stream[Any], start: int) -> None:
        super().__init__(up._worker, up, up._source)
        self._count = start

    async def _pull(self) -> Pulled:
        up = self._up
        assert up is not None
        element = await up._pull()
        if element is EMPTY:
            return element
        value, carrier = cast(Element, element)
        i = self._count
        self._count = i + 1
        return ((i, value), carrier)


def _carrier_key(carrier: Carrier) -> Any:
    """The key of an element: its event's, or for a batch the key all its events share, else
    None."""
    if isinstance(carrier, list):
        first = carrier[0].key if carrier else None
        return first if all(e.key == first for e in carrier) else None
    return carrier.key


class _Items(Stream[tuple[Any, Any]]):
    _op = "items"
    _changes_values = True

    def __init__(self, up: Stream[Any]) -> None:
        super().__init__(up._worker, up, up._source)

    async def _pull(self) -> Pulled:
        up = self._up
        assert up is not None
        element = await up._pull()
        if element is EMPTY:
            return element
        value, carrier = cast(Element, element)
        return ((_carrier_key(carrier), value), carrier)


class _Events(Stream[Any]):
    _op = "events"
    _changes_values = True

    def __init__(self, up: Stream[Any]) -> None:
        super().__init__(up._worker, up, up._source)

    async def _pull(self) -> Pulled:
        up = self._up
        assert up is not None
        element = await up._pull()
        if element is EMPTY:
            return element
        value, carrier = cast(Element, element)
        if isinstance(carrier, Event):
            carrier.value = value  # what the pipeline made of it (processors may transform)
        return (carrier, carrier)


def _forwards_bytes(up: Stream[Any], topic: Topic[Any]) -> bool:
    """Whether the values `up` yields go to `topic` as their messages' own value bytes rather
    than encoded again: no hook can have changed them, and `topic` carries the type they were
    decoded as. Re-encoding would drop the fields the record does not declare and write out
    defaults the producer never sent; the bytes are also cheaper."""
    return up._unchanged() and all(t.value_type == topic.value_type for t in up._source.topics)


class _Echo(Stream[Any]):
    _op = "echo"

    def __init__(self, up: Stream[Any], topics: tuple[Topic[Any], ...], op: str) -> None:
        super().__init__(up._worker, up, up._source)
        self._topics = topics
        self._op = op
        self._targets = [(topic, _forwards_bytes(up, topic)) for topic in topics]

    def _may_wait(self) -> bool:
        return True  # it awaits its sends

    async def _pull(self) -> Pulled:
        up = self._up
        assert up is not None
        worker = self._worker
        while True:
            element = await up._pull()
            if element is EMPTY:
                return element
            value, carrier = cast(Element, element)
            try:
                for topic, as_received in self._targets:
                    await worker.forward(topic, value, carrier, as_received=as_received)
            except Exception as exc:
                await worker.dead_letter(carrier, exc, self._agent)
                continue
            return element


# The most elements one forwarding run sends at once (a run ends earlier when upstream has
# nothing more buffered).
_RUN_MAX = 1000

# The most `str` keys a forwarding task remembers the encoding of (see `_encode_str_key`).
_KEY_CACHE_MAX = 65536


class _Forward(Stream[Any]):
    """`group_by` and `through`: a background task moves upstream values to `topic`; this node
    reads `topic` back through its own buffer, as every other subscriber would."""

    def __init__(
        self,
        up: Stream[Any],
        topic: Topic[Any],
        key_fn: Callable[[Any], Any] | None,
        op: str,
        key_check: Callable[[Any], Any] | None = None,
    ) -> None:
        source = up._worker.source_for((topic,), up._agent)
        super().__init__(up._worker, up, source)
        self._op = op
        self._topic = topic
        self._key_fn = key_fn
        self._key_check = key_check
        self._key_async = key_fn is not None and _is_async(key_fn)
        self._as_received = _forwards_bytes(up, topic)
        self._key_bytes: dict[str, bytes] = {}  # see `_encode_str_key`
        if self._fused_steps() is not None:
            # The forwarding task reads the source buffer itself (`_run_fused`), nothing
            # pulls from it: the Conductor can hand it whole `Chunk`s, no `Event` each.
            up._source.chunk()
        self._worker.spawn_driver(self._run(), f"{self._agent}:{op}:{topic.name}")

    def _fused_steps(self) -> list[tuple[bool, Callable[[Any], Any], Any]] | None:
        """The sync processors and filters between the source buffer and this node, in order
        as `(is_filter, hook, check)`, when that is all there is (and the key function is sync):
        the forwarding task then applies them to each run in one plain loop (`_run_fused`).
        None when anything else is upstream."""
        if self._key_async:
            return None
        steps: list[tuple[bool, Callable[[Any], Any], Any]] = []
        node = self._up
        while node is not None and node is not node._source:
            if isinstance(node, _Process) and not node._waits:
                steps[:0] = [(False, fn, check) for fn, _, check in node._fns]
            elif isinstance(node, _Filter) and not node._waits:
                steps.insert(0, (True, node._pred, node._check))
            else:
                return None
            node = node._up
        return steps

    async def _run(self) -> None:
        # Elements are sent in runs, each run as soon as upstream has nothing more at hand (or
        # at _RUN_MAX): one `send_many` and one delivery callback per run, not per element.
        # A hook or encoding that fails dead-letters its own element; the run goes on.
        up = self._up
        assert up is not None
        steps = self._fused_steps()
        if steps is not None:
            await self._run_fused(steps)
            return
        source = up._source
        worker, topic, key_fn, key_async = self._worker, self._topic, self._key_fn, self._key_async
        key_check = self._key_check
        encode_key, encode_value = topic.key_codec.encode, topic.value_codec.encode
        as_received = self._as_received  # then every carrier is an Event
        positions = topic.positions  # an aggregation reads on: records carry their source
        records: list[tuple[bytes | None, bytes | None, Headers]] = []
        carriers: list[Carrier] = []
        may_wait = False  # whether pulling the next element may wait on a hook (per run)
        while True:
            if records and may_wait:
                # What is done goes out before an async hook gets to hold it back.
                await self._send_run(records, carriers)
                records, carriers = [], []
            element = await up._pull()
            if element is EMPTY:
                if records:
                    await self._send_run(records, carriers)
                    records, carriers = [], []
                    continue
                if source.closed:
                    return
                await source.wait(up._deadline())
                continue
            value, carrier = cast(Element, element)
            if not records:
                may_wait = up._may_wait()
            try:
                raw_key, headers = forwarded_key_headers(carrier)
                if positions and type(carrier) is Event:
                    headers = positioned(carrier.message, headers)
                if key_fn is not None:
                    key = key_fn(value)
                    if key_async or type(key) not in _NOT_AWAITABLE:
                        if records and (key_async or inspect.isawaitable(key)):
                            await self._send_run(records, carriers)  # before the key waits
                            records, carriers = [], []
                        key = await _settle(key, key_async)
                    if key_check is not None:
                        key = key_check(key)
                    if type(key) is str:
                        raw_key = self._key_bytes.get(key)
                        if raw_key is None:
                            raw_key = self._encode_str_key(key)
                    else:
                        raw_key = encode_key(key)
                if as_received:
                    data = carrier.message.value  # type: ignore[union-attr]
                else:
                    data = encode_value(value)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # a hook's SystemExit too: see the module docstring
                await worker.dead_letter(carrier, exc, self._agent)
                continue
            records.append((raw_key, data, headers))
            carriers.append(carrier)
            if len(records) >= _RUN_MAX:
                await self._send_run(records, carriers)
                records, carriers = [], []

    async def _run_fused(self, steps: list[tuple[bool, Callable[[Any], Any], Any]]) -> None:
        """`_run` for a stateless chain over the source: each run of buffered chunks goes
        through the hooks and out in one loop, with no pull (a coroutine per element per
        operation) in between and no `Event` per element. Per chunk, the elements filtered
        out are released at once, a dead-lettered one on its own (its dead letter holds it),
        and those sent are acked as one (`Members`) when their run is delivered: the chunk's
        one offsets entry keeps every commit before the first of them until then. Same
        dead-lettering and order as `_run`."""
        up = self._up
        assert up is not None
        source = up._source
        buffer = cast("deque[Chunk]", source.buffer)
        popleft = buffer.popleft
        worker, key_fn, key_check = self._worker, self._key_fn, self._key_check
        encode_key, encode_value = self._topic.key_codec.encode, self._topic.value_codec.encode
        as_received, positions, agent = self._as_received, self._topic.positions, self._agent
        not_awaitable = _NOT_AWAITABLE
        key_bytes = self._key_bytes
        while True:
            if not buffer:
                if source.closed:
                    return
                await source.wait(None)
                continue
            if source.sample:
                source.sample_tick()
            # Chunks up to `_RUN_MAX` elements; one that does not fit is cut, its rest left
            # at the head of the buffer (both parts are members of its one offsets entry).
            chunks: list[Chunk] = []
            room = _RUN_MAX
            while buffer:
                chunk = buffer[0]
                n = len(chunk.values)
                if n > room:
                    messages, values = chunk.messages, chunk.values
                    part = Chunk(chunk.state, chunk.entry, messages[:room], values[:room], None)
                    part.kdecode = chunk.kdecode
                    chunks.append(part)
                    chunk.messages, chunk.values = messages[room:], values[room:]
                    room = 0
                    break
                chunks.append(popleft())
                room -= n
            taken = _RUN_MAX - room
            source.size -= taken
            if source.full and source.size <= source.low:
                worker.conductor.drained(source)
            records: list[tuple[bytes | None, bytes | None, Headers]] = []
            acks: list[Members] = []
            stamps: list[int | None] = []
            for chunk in chunks:
                messages = chunk.messages
                if positions and messages:
                    # One partition's messages: their position header is formatted once per
                    # chunk, with each record's offset filled in (`positioned`'s mark).
                    first = messages[0]
                    mark = f"{first.topic}:{first.partition}:".encode().replace(b"%", b"%%")
                    mark += b"%d"
                sent: list[int] = []  # members of this chunk in `records`, not in `acks` yet
                dropped = 0  # members filtered out
                for i, value in enumerate(chunk.values):
                    try:
                        for is_filter, fn, check in steps:
                            result = fn(value)
                            if type(result) not in not_awaitable:
                                if records and inspect.isawaitable(result):
                                    if sent:
                                        acks.append(Members(chunk, sent))
                                        sent = []
                                    await self._send_chunks(records, acks, stamps)
                                    records, acks, stamps = [], [], []
                                result = await _settle(result, False)
                            if check is not None:
                                result = check(result)
                            if not is_filter:
                                value = result
                            elif not result:
                                break
                        else:
                            message = messages[i]
                            raw_key, headers = message.key, message.headers
                            if positions:
                                if headers:
                                    headers = positioned(message, headers)
                                else:  # a list: the Kafka transport's batch builder takes that
                                    headers = [(POSITION_HEADER, mark % message.offset)]
                            if key_fn is not None:
                                key = key_fn(value)
                                if type(key) not in not_awaitable:
                                    if records and inspect.isawaitable(key):
                                        if sent:
                                            acks.append(Members(chunk, sent))
                                            sent = []
                                        await self._send_chunks(records, acks, stamps)
                                        records, acks, stamps = [], [], []
                                    key = await _settle(key, False)
                                if key_check is not None:
                                    key = key_check(key)
                                if type(key) is str:
                                    raw_key = key_bytes.get(key)
                                    if raw_key is None:
                                        raw_key = self._encode_str_key(key)
                                else:
                                    raw_key = encode_key(key)
                            data = message.value if as_received else encode_value(value)
                            records.append((raw_key, data, headers))
                            sent.append(i)
                            stamps.append(message.timestamp)
                            continue
                        dropped += 1  # filtered out: handled
                    except asyncio.CancelledError:
                        raise
                    except BaseException as exc:  # a hook's SystemExit too
                        await worker.dead_letter(Members(chunk, []).member(i), exc, agent)
                if dropped:
                    chunk.state.release_members(chunk.entry, dropped)
                if sent:
                    acks.append(Members(chunk, sent))
            if records:
                await self._send_chunks(records, acks, stamps)
            left = source.until_check - taken
            if left > 0:
                source.until_check = left
            else:
                await source.share_loop()

    async def _send_chunks(
        self,
        records: list[tuple[bytes | None, bytes | None, Headers]],
        acks: list[Members],
        timestamps: list[int | None],
    ) -> None:
        """`_send_run` for `_run_fused`: `acks` hold the records' elements in order."""
        try:
            await self._worker.forward_run(self._topic, records, acks, timestamps)
        except RecordTooLargeError as exc:  # refused before anything was sent
            refused = set(exc.indexes)
            owners = [(members, i) for members in acks for i in members.indexes]
            for r in sorted(refused):
                members, i = owners[r]
                await self._worker.dead_letter(members.member(i), exc, self._agent)
            kept: dict[Members, list[int]] = {}
            for r, (members, i) in enumerate(owners):
                if r not in refused:
                    kept.setdefault(members, []).append(i)
            if kept:
                await self._send_chunks(
                    [records[r] for r in range(len(records)) if r not in refused],
                    [Members(members.chunk, indexes) for members, indexes in kept.items()],
                    [timestamps[r] for r in range(len(records)) if r not in refused],
                )
        # Any other failure is the transport's: see `_send_run`.

    def _encode_str_key(self, key: str) -> bytes | None:
        """The topic's encoding of a `str` key, remembered: a `group_by` key repeats (that is
        its point), and a dict look-up costs a fraction of the encode. The codec is a pure
        function of the string, so the cache changes nothing but the cost; a key that fails
        to encode raises here every time and is never remembered."""
        raw_key = self._topic.key_codec.encode(key)
        if raw_key is not None:
            key_bytes = self._key_bytes
            if len(key_bytes) >= _KEY_CACHE_MAX:
                key_bytes.clear()  # many distinct keys: start again rather than grow
            key_bytes[key] = raw_key
        return raw_key

    async def _send_run(
        self,
        records: list[tuple[bytes | None, bytes | None, Headers]],
        carriers: list[Carrier],
        timestamps: list[int | None] | None = None,
    ) -> None:
        worker = self._worker
        try:
            await worker.forward_run(self._topic, records, carriers, timestamps)
        except RecordTooLargeError as exc:  # refused before anything was sent
            refused = set(exc.indexes)
            for i in sorted(refused):
                await worker.dead_letter(carriers[i], exc, self._agent)
            kept = [i for i in range(len(records)) if i not in refused]
            if kept:
                await self._send_run(
                    [records[i] for i in kept],
                    [carriers[i] for i in kept],
                    None if timestamps is None else [timestamps[i] for i in kept],
                )
        # Any other failure is the transport's, not the data's: `forward_run` retried it and
        # stopped the worker with the run unacked, so nothing is dead-lettered for it.

    async def _pull(self) -> Pulled:
        return await self._source._pull()

    __anext__ = _next_source_value

    def _deadline(self) -> float | None:
        return None  # upstream deadlines belong to the forwarding task, not to this reader

    def _unchanged(self) -> bool:
        return True  # this reader yields what it decodes from `topic`

    def _may_wait(self) -> bool:
        return False  # this reader only reads its own buffer; the forwarding task does the rest


class Run(Generic[T]):
    """A run of values handed to a fused agent loop (`async for run in stream.runs()`, then
    `for value in run:`). The element the loop is handling is known from the position of the
    loop's iterator, so a body that raises dead-letters exactly that element; called again,
    the body gets the same run back and goes on after it. The run is acked as a whole when the
    agent asks for the next one, after what it sent (`send`) has been handed to the transport.

    Iterating is a plain list iterator (no generator step per element): its position
    (`length_hint`, what is left) tells which element is in hand when the runtime asks."""

    __slots__ = (
        "_acked",
        "_bounds",
        "_carriers",
        "_chunks",
        "_events",
        "_it",
        "_next",
        "_node",
        "_resume",
        "_sends",
        "_values",
    )

    def __init__(
        self,
        node: _Runs[T],
        values: list[T],
        carriers: list[Carrier] | None,
        chunks: list[Chunk] | None = None,
    ) -> None:
        self._node = node
        self._values = values
        self._carriers = carriers  # None: the run is `chunks`, its events made when needed
        self._chunks = chunks or []
        self._bounds = _bounds(self._chunks)  # the index in the run of each chunk's first
        self._events: dict[int, Event[Any, Any]] = {}  # a chunk's elements made into events
        self._it: Iterator[T] | None = None  # the loop's iterator, while it runs
        self._next = 0  # where a new loop over the run starts
        self._resume = False  # the body raised on an element and is called again
        self._acked = 0  # elements before this one were acked by `flush`
        # Records sent per topic, with the carrier of each; sent when the run is done.
        self._sends: dict[Topic[Any], tuple[list[OutRecord], list[Carrier]]] | None = None

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self) -> Iterator[T]:
        it = iter(self._values)
        if self._next:
            it.__setstate__(self._next)  # type: ignore[attr-defined]
        self._it = it
        return it

    def _position(self) -> int:
        """The index of the element in hand (the last one handed to the loop), -1 if none.
        Revocation only drops elements after it, so the iterator's count of what is left
        still points there."""
        it = self._it
        if it is None:
            return self._next - 1
        return len(self._values) - length_hint(it) - 1

    def _carrier(self, i: int) -> Carrier:
        """The carrier of element `i`."""
        carriers = self._carriers
        if carriers is not None:
            return carriers[i]
        event = self._events.get(i)
        if event is None:
            j = bisect_right(self._bounds, i) - 1
            chunk = self._chunks[j]
            event = self._events[i] = _Member(
                chunk.messages[i - self._bounds[j]],
                self._values[i],
                chunk.state,
                chunk.kdecode,
                i < self._acked,
                _chunk=chunk,
            )
        return event

    def _ack_chunks(self, start: int, stop: int) -> None:
        """Ack elements `start` to `stop` of a run of chunks, one release per chunk, less
        those acked on their own (dead-lettered); all before `start` are acked already."""
        events = self._events
        for chunk, b in zip(self._chunks, self._bounds, strict=True):
            n = len(chunk.messages)
            lo = start - b if start > b else 0  # not `max`/`min`: this runs once per run
            hi = stop - b if stop - b < n else n
            if lo >= hi:
                continue
            count = hi - lo
            if events:
                for i in range(b + lo, b + hi):
                    event = events.get(i)
                    if event is not None:
                        if event._acked:
                            count -= 1
                        else:
                            event._acked = True
            if count:
                chunk.state.release_members(chunk.entry, count)
            # All before `hi` is done: commits may pass it, as they would one by one (up to
            # the first member dropped on revocation, when all that was kept is done).
            first = chunk.messages[hi].offset if hi < n else chunk.cut
            if first is not None:
                chunk.entry = chunk.state.advance_run(chunk.entry, first)

    def count(self, k: int) -> int:
        """The next number of the loop's `k`-th `enumerate`."""
        counts = self._node._counts
        n = counts[k]
        counts[k] = n + 1
        return n

    async def flush(self) -> None:
        """Send what the run has sent so far and ack the elements before the one in hand: the
        loop is about to wait on a hook, and work that is done should not wait with it (a
        loop that never waits sends and acks once per run)."""
        sends = self._sends
        if sends:
            self._sends = None
            await self._node._send(sends)
        done = self._position()
        carriers = self._carriers
        if carriers is None:
            if done > self._acked:
                self._ack_chunks(self._acked, done)
        else:
            for carrier in carriers[self._acked : done]:
                ack_carrier(carrier)
        self._acked = max(done, self._acked)

    def send(
        self, topic: Topic[Any], value: Any, *, as_received: bool = False, more_steps: bool = False
    ) -> None:
        """`echo`/`to` in a fused loop: send `value` to `topic` with the key, headers and
        timestamp of the element in hand, once the run is done. The element stays in flight
        until the record is delivered. `as_received`: no hook can have changed `value`, so
        its message's own bytes go out when `topic` has the type they were decoded as. A
        value that cannot be encoded raises here. `more_steps`: the element has steps with
        effects after this send, so a record the transport would refuse as too large raises
        here too, and the element is dead-lettered before them; else (its last step) the
        refusal waits for the run's send, which dead-letters it then."""
        node = self._node
        position = self._position()
        assert position >= 0, "Run.send outside the loop over the run"
        carrier = self._carrier(position)
        if as_received and not isinstance(carrier, list) and node._as_received(topic):
            data = carrier.message.value
        else:
            data = topic.value_codec.encode(value)
        raw_key, headers = forwarded_key_headers(carrier)
        if topic.positions and not isinstance(carrier, list):
            headers = positioned(carrier.message, headers)
        if more_steps:  # as at a `to` outside a fused loop, the element stops here
            node._refuse(raw_key, data, headers)
        sends = self._sends
        if sends is None:
            sends = self._sends = {}
        pending = sends.get(topic)
        if pending is None:
            pending = sends[topic] = ([], [])
        pending[0].append((raw_key, data, headers))
        pending[1].append(carrier)
        for event in carrier_events(carrier):  # in flight until delivered, even if dead-lettered
            event._offsets.hold(event.message.offset)


OutRecord = tuple[bytes | None, bytes | None, Headers]


class _Runs(Stream[Run[T]]):
    """`Stream.runs()`: hands out runs of up to `HANDOUT_RUN` elements. Straight from the
    source buffer when upstream passes events on as they are (the source, or the read-back
    side of `group_by`/`through`); otherwise pulled from upstream until it has nothing more at
    hand (a `take`'s batches, an aggregate's rows)."""

    _op = "runs"

    def __init__(self, up: Stream[T], counters: Sequence[int]) -> None:
        super().__init__(up._worker, up, up._source)
        self._counts = list(counters)
        self._direct = up is up._source or isinstance(up, _Forward)
        if self._direct:
            # The common case: the Conductor hands this loop whole runs (`Chunk`s), each
            # registered and acked at once, without an `Event` per message (a forward's
            # read-back too: nothing but this loop reads its buffer).
            self._source.chunk()
        else:
            up._read_in_runs()
        self._run: Run[T] | None = None
        self._raw: dict[Topic[Any], bool] = {}
        self._refuse = self._worker.transport.refuse_too_large
        self._sample_t0 = 0.0
        # Revocation drops the unhandled rest of a run (see `abandon`), as it drops buffers;
        # so does a stop (see `close`).
        self._worker.takes.append(self)
        self._worker.fused.append(self)

    pending = 0  # values held for a partial batch: never (see `Worker.partial_batches`)

    @property
    def _current(self) -> Carrier | None:
        """The element the agent is handling (the Worker dead-letters it if the body raises)."""
        run = self._run
        if run is None:
            return None
        position = run._position()
        return run._carrier(position) if position >= 0 else None

    @_current.setter
    def _current(self, value: Carrier | None) -> None:
        # Only ever cleared: by the Worker once it dead-lettered (or acked) the element in
        # hand. A new loop over the run starts after it.
        assert value is None
        run: Run[T] | None = getattr(self, "_run", None)  # `Stream.__init__` clears it too
        if run is not None and run._it is not None:
            run._next = run._position() + 1
            run._it = None
            run._resume = True

    def _as_received(self, topic: Topic[Any]) -> bool:
        raw = self._raw.get(topic)
        if raw is None:
            up = self._up
            assert up is not None
            raw = self._raw[topic] = _forwards_bytes(up, topic)
        return raw

    def abandon(self, revoked: frozenset[Any]) -> None:
        """Drop the elements of revoked partitions the loop has not reached yet (never handed
        to the agent, so the partitions' new owner handles them)."""
        run = self._run
        if run is None:
            return
        start = run._position() + 1
        values, carriers = run._values, run._carriers
        if carriers is None:
            self._abandon_chunk(run, start, revoked)
            return
        for carrier in carriers[: max(start - 1, 0)]:  # none before the loop reached one
            # Handled (what they sent holds them until delivered): done, so the revocation's
            # commit covers them rather than leaving them to the next owner.
            if isinstance(carrier, Event) and (
                (carrier.message.topic, carrier.message.partition) in revoked
            ):
                carrier._ack()
        keep: list[int] = []
        for i in range(start, len(values)):
            carrier = carriers[i]
            if isinstance(carrier, Event) and (
                (carrier.message.topic, carrier.message.partition) in revoked
            ):
                # A chunk's member (an aggregate's) counts in its chunk's entry.
                if type(carrier) is _Member:
                    carrier._offsets.abandon(carrier._chunk.entry, 1, carrier.message.offset)
                else:
                    carrier._offsets.abandon(carrier.message.offset)
            else:
                keep.append(i)  # a batch is kept whole (at-least-once), as `_Take` keeps it
        if len(keep) != len(values) - start:
            if self._direct:
                self._source.dropped += len(values) - start - len(keep)
            values[start:] = [values[i] for i in keep]
            carriers[start:] = [carriers[i] for i in keep]

    def close(self) -> None:
        """The worker stops: the elements the loop has not reached are dropped unacked, as
        the source drops its buffer, so they stay uncommitted for the next owner and the stop
        waits for the element in hand only."""
        run = self._run
        if run is None:
            return
        start = run._position() + 1
        dropped = len(run._values) - start
        if dropped > 0:
            # A run of chunks keeps its chunks: the elements past the values are never acked,
            # so their offsets stay registered and uncommitted.
            del run._values[start:]
            if run._carriers is not None:
                for carrier in run._carriers[start:]:
                    if type(carrier) is _Member:  # an aggregate's: its chunk's entry counts it
                        carrier._offsets.abandon(carrier._chunk.entry, 1, carrier.message.offset)
                del run._carriers[start:]
            if self._direct:
                self._source.dropped += dropped

    def _abandon_chunk(self, run: Run[T], start: int, revoked: frozenset[Any]) -> None:
        gone = [(c.messages[0].topic, c.messages[0].partition) in revoked for c in run._chunks]
        if not any(gone):
            return
        # As for events: handled elements are done, the unhandled rest of the revoked
        # partitions is dropped.
        if start - 1 > run._acked:
            run._ack_chunks(run._acked, start - 1)
            run._acked = start - 1
        values: list[T] = []
        chunks: list[Chunk] = []
        for chunk, b, revoked_chunk in zip(run._chunks, run._bounds, gone, strict=True):
            n = len(chunk.messages)
            # A chunk wholly before the element in hand is kept whole (min): `start - b`
            # counts the later chunks' elements too.
            keep = min(max(start - b, 0), n) if revoked_chunk else n
            if keep < n:
                chunk.state.abandon(chunk.entry, n - keep)
                self._source.dropped += n - keep
                chunk.cut = chunk.messages[keep].offset
                del chunk.messages[keep:]
            if keep:
                values.extend(run._values[b : b + keep])
                chunks.append(chunk)
        run._values[:] = values
        run._chunks = chunks
        run._bounds = _bounds(chunks)

    async def __anext__(self) -> Run[T]:
        run = self._run
        source = self._source
        if run is not None:
            if run._resume and run._next < len(run._values):
                run._resume = False
                return run  # the body raised on an element and was called again: go on
            self._run = None
            if run._sends:
                await self._send(run._sends)
            carriers = run._carriers
            if carriers is None:
                run._ack_chunks(run._acked, len(run._values))
            else:
                chunk: Chunk | None = None  # members of a chunk in a row: one release
                members = 0
                for carrier in carriers:  # `ack_carrier`, inlined for the common case
                    if type(carrier) is Event:
                        if not carrier._acked:
                            carrier._acked = True
                            carrier._offsets.release(carrier.message.offset)
                    elif type(carrier) is _Member:
                        if not carrier._acked:
                            carrier._acked = True
                            of = carrier._chunk
                            if of is not chunk:
                                if members:
                                    assert chunk is not None
                                    chunk.state.release_members(chunk.entry, members)
                                chunk, members = of, 0
                            members += 1
                    else:
                        ack_carrier(carrier)
                if members:
                    assert chunk is not None
                    chunk.state.release_members(chunk.entry, members)
            if self._sample_t0:
                elapsed = time.perf_counter() - self._sample_t0
                source.latency.observe(elapsed / len(run._values))  # per element of the run
                self._sample_t0 = 0.0
                source.sample = False
            left = source.until_check - len(run._values)
            if left > 0:
                source.until_check = left
            else:
                await source.share_loop()
        while True:
            run = self._take() if self._direct else await self._pull_run()
            if run is not None:
                break
            if source.closed:
                raise StopAsyncIteration
            await source.wait(self._deadline())
        if source.sample:
            self._sample_t0 = time.perf_counter()
        self._run = run
        return run

    def _take(self) -> Run[T] | None:
        source = self._source
        buffer = source.buffer
        if not buffer:
            return None
        if source.chunked:
            # Whole chunks, as many as fit in `HANDOUT_RUN` (at least one).
            chunks: deque[Chunk] = buffer  # type: ignore[assignment]
            chunk = chunks.popleft()
            values = chunk.values
            taken = [chunk]
            while chunks and len(values) + len(chunks[0].values) <= HANDOUT_RUN:
                chunk = chunks.popleft()
                if len(taken) == 1:
                    values = values.copy()
                values += chunk.values
                taken.append(chunk)
            source.size -= len(values)
            if source.full and source.size <= source.low:
                self._worker.conductor.drained(source)
            return Run(self, values, None, taken)
        popleft = buffer.popleft
        events = [popleft() for _ in range(min(len(buffer), HANDOUT_RUN))]
        if source.full and len(buffer) <= source.low:
            self._worker.conductor.drained(source)
        return Run(self, [e.value for e in events], cast("list[Carrier]", events))

    async def _pull_run(self) -> Run[T] | None:
        up = self._up
        assert up is not None
        values, carriers = await up._pull_many(HANDOUT_RUN)
        return Run(self, values, carriers) if values else None

    async def _send(self, sends: dict[Topic[Any], tuple[list[OutRecord], list[Carrier]]]) -> None:
        for topic, (records, carriers) in sends.items():
            await self._send_run(topic, records, carriers)

    async def _send_run(
        self, topic: Topic[Any], records: list[OutRecord], carriers: list[Carrier]
    ) -> None:
        """One `send_many` per topic and run; each record's hold (taken in `Run.send`) is
        released when the run's records are delivered, and never if they are not (the worker
        stops with them uncommitted). A transport failure is retried as `forward` retries it."""
        worker = self._worker
        held = [(e._offsets, e.message.offset) for c in carriers for e in carrier_events(c)]
        timestamps = [forwarded_timestamp(carrier) for carrier in carriers]
        try:
            delivery = await worker.transport.send_many(topic.name, records, timestamps)
        except RecordTooLargeError as exc:  # refused before anything was sent: a data error
            refused = set(exc.indexes)
            for i in sorted(refused):
                for e in carrier_events(carriers[i]):
                    e._offsets.release(e.message.offset)  # its hold: nothing went out
                await worker.dead_letter(carriers[i], exc, self._agent)
            kept = [i for i in range(len(records)) if i not in refused]
            if kept:
                await self._send_run(topic, [records[i] for i in kept], [carriers[i] for i in kept])
            return
        except Exception as exc:
            send = partial(worker.transport.send_many, topic.name, records, timestamps)
            retried = await worker._resend(exc, send, topic.name)
            if retried is None:  # the worker is stopping: the holds stay, nothing commits
                return
            delivery = retried
        worker.sent += len(records)
        worker.sent_to[topic.name] += len(records)
        fut = delivery if isinstance(delivery, asyncio.Future) else asyncio.ensure_future(delivery)
        if fut.done():
            worker._delivered(held, fut)  # now, not a loop step later
        else:
            fut.add_done_callback(partial(worker._delivered, held))
