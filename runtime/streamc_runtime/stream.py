"""`Stream[T]` and its simple operations (`process`, `filter`, `enumerate`, `items`, `events`):
what an agent body iterates. The element model (`Event`, carriers) is in `events`, the root
buffer in `source`, `take` in `take`, the operations that send to topics in `forward`, fused
loops (`Run`) in `runs`, stateful operations in `state/`; `Stream` builds those nodes.

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
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from operator import attrgetter
from types import GeneratorType
from typing import TYPE_CHECKING, Any, Generic, TypeGuard, TypeVar, cast

from .events import (
    EMPTY,
    Carrier,
    Element,
    Event,
    Pulled,
    ack_carrier,
)
from .hooks import result_check

if TYPE_CHECKING:
    from .runs import Run
    from .source import SourceStream
    from .state.table import Table
    from .topic import Topic
    from .worker import Worker

__all__ = ["Stream", "awaitable"]

T = TypeVar("T")
U = TypeVar("U")


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
        from .forward import _Forward

        return self._then("group_by", lambda: _Forward(self, topic, key_fn, "group_by", check))

    def take(self, n: int, *, within: float | None = None) -> Stream[list[T]]:
        """Batches of at most `n` values, never empty; with `within`, a partial batch is emitted
        at most `within` seconds after its first value arrived. Its events are acked only after
        the batch has been handled."""
        if n < 1:
            raise ValueError(f"take: n must be >= 1, got {n}")
        if within is not None and within <= 0:
            raise ValueError(f"take: within must be > 0, got {within}")
        from .take import _Take

        return self._then("take", lambda: _Take(self, n, within))

    def enumerate(self, start: int = 0) -> Stream[tuple[int, T]]:
        """`(count, value)` pairs; the count survives agent restarts."""
        return self._then("enumerate", lambda: _Enumerate(self, start))

    def through(self, topic: Topic[Any]) -> Stream[T]:
        """Send every value to `topic` (keeping key and headers) and continue from that topic."""
        from .forward import _Forward

        return self._then("through", lambda: _Forward(self, topic, None, "through"))

    def echo(self, *topics: Topic[Any]) -> Stream[T]:
        """Send a copy of every value to each topic (keeping key and headers) and continue with
        the same values; a source event is done only once its copies are delivered."""
        from .forward import _Echo

        return self._then("echo", lambda: _Echo(self, topics, "echo"))

    def to(self, topic: Topic[Any]) -> Stream[T]:
        """Send every value to `topic`; meant as the last operation (`async for _ in ...: pass`)."""
        from .forward import _Echo

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
        from .runs import _Runs

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
