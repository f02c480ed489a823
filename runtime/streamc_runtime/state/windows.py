"""Windows: tumbling, hopping and session windows over event time, and their aggregation.

A windowed table keeps one state per (key, window). Its store key is the key's bytes followed
by the window start as 8 bytes big-endian (so a key's windows sort by time), its value a
`Windowed` (the window end and the aggregation state). Each table partition has a *stream
time*, the largest event time folded there; it is kept in the partition's skip map under
`STREAM_TIME` (no source partition is named without a ':'), so it is written to the changelog
with every map record, checkpointed with it, and restored exactly like the positions (it only
rises, as they do).

A window [start, end) closes when stream time >= end + grace: it leaves the index (no fold
reaches it again), and with `emit="final"` its row goes downstream then, once. Its tombstone
(and its removal from the store) waits until every row emitted so far is delivered
(`_Outputs`): written first, a crash before the delivery would lose the row, the replay
finding nothing to close. Until then the element that closed it stays uncommitted, so after
a crash its replay closes the window again (every stored window whose close time its event
time reaches) and the row goes out again with the same position. A record whose every
window is closed is late: it is never folded, and goes to the `late` topic or the
dead-letter topic (`streamc.error.type: late`).
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from heapq import heappop, heappush
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

import msgspec

from ..records import Time, key_codec, to_ms
from ..stream import (
    _UNDECODED,
    EMPTY,
    Carrier,
    Element,
    Event,
    Pulled,
    SourceStream,
    Stream,
    ack_carrier,
)
from ..transport import Delivery, Headers
from .aggregate import (
    _KEYS_MAX,
    _NO_HELD,
    _without_closed,
    hands_over_events,
    held_store,
    take_run,
)
from .changelog import POSITION_HEADER, map_record, source_partition, unreadable_position

if TYPE_CHECKING:
    from ..offsets import PartitionOffsets
    from ..topic import Topic
    from .store import Store
    from .table import Table, TablePartitions, _Held

__all__ = [
    "STREAM_TIME",
    "Hopping",
    "LateError",
    "Session",
    "Tumbling",
    "Window",
    "WindowSpec",
    "Windowed",
    "WindowedAggregate",
    "split_key",
    "window_key",
]

# The skip map entry holding the partition's stream time (ms): not "<topic>:<partition>".
STREAM_TIME = "streamc.stream_time"
_NO_TIME = -(2**62)  # stream time before any event
_RUN_MAX = 1000

S = TypeVar("S")


@dataclass(frozen=True, slots=True)
class Tumbling:
    """Windows [n*size, (n+1)*size) (milliseconds), closed `grace` ms after their end."""

    size: int
    grace: int = 0

    def __post_init__(self) -> None:
        _positive("size", self.size)
        _not_negative("grace", self.grace)

    @property
    def advance(self) -> int:
        return self.size


@dataclass(frozen=True, slots=True)
class Hopping:
    """Windows [n*advance, n*advance + size), `size` a multiple of `advance`."""

    size: int
    advance: int
    grace: int = 0

    def __post_init__(self) -> None:
        _positive("size", self.size)
        _positive("advance", self.advance)
        _not_negative("grace", self.grace)
        if self.advance > self.size or self.size % self.advance:
            raise ValueError(f"hopping window: advance {self.advance} must divide size {self.size}")


@dataclass(frozen=True, slots=True)
class Session:
    """Per key, events closer than `gap` ms form a session [first, last + gap)."""

    gap: int
    grace: int = 0

    def __post_init__(self) -> None:
        _positive("gap", self.gap)
        _not_negative("grace", self.grace)


WindowSpec = Tumbling | Hopping | Session


def _positive(name: str, value: int) -> None:
    if not isinstance(value, int) or value <= 0:
        raise ValueError(f"window {name} must be a positive number of milliseconds, got {value!r}")


def _not_negative(name: str, value: int) -> None:
    if not isinstance(value, int) or value < 0:
        raise ValueError(f"window {name} must be >= 0 milliseconds, got {value!r}")


@dataclass(frozen=True, slots=True)
class Window:
    """A window [start, end): `start_ms`/`end_ms` in epoch milliseconds, `start`/`end` as
    timezone-aware UTC datetimes."""

    start_ms: int
    end_ms: int

    @property
    def start(self) -> Time:
        return _time(self.start_ms)

    @property
    def end(self) -> Time:
        return _time(self.end_ms)


# Window bounds as Times, shared: a row per fold asks for them, the keys of a partition share
# a few windows, and building a datetime costs more than the rest of the row. Immutable, so
# sharing is safe; cleared when full rather than evicted one by one.
_TIMES: dict[int, Time] = {}
_TIMES_MAX = 4096


def _time(ms: int) -> Time:
    t = _TIMES.get(ms)
    if t is None:
        if len(_TIMES) >= _TIMES_MAX:
            _TIMES.clear()
        t = _TIMES[ms] = Time.from_ms(ms)
    return t


class Windowed(msgspec.Struct, Generic[S], array_like=True, gc=False):
    """A window's stored value: its end (ms; a session's grows) and the aggregation state.

    Untracked by the cycle collector (`gc=False`): a store holds one per open window, tens of
    thousands, and each full collection walked them all; a Windowed never takes part in a
    cycle (nothing a state holds can reach its Windowed)."""

    end: int
    state: S


class LateError(Exception):
    """A record whose every window has closed (dead-lettered as `streamc.error.type: late`)."""

    error_type = "late"


def window_starts(spec: Tumbling | Hopping, t: int) -> range:
    """The starts of the windows an event at `t` belongs to: multiples of the advance, s <=
    t < s + size (oldest first)."""
    advance = spec.advance
    last = t - t % advance  # floor, for negative times too
    return range(last - spec.size + advance, last + 1, advance)


def window_key(key: bytes, start: int) -> bytes:
    return key + (start + 2**63).to_bytes(8, "big")  # offset: negative starts sort first


def split_key(raw: bytes) -> tuple[bytes, int]:
    return raw[:-8], int.from_bytes(raw[-8:], "big") - 2**63


def event_time_of(field: str | None) -> Callable[[Any, Event[Any, Any]], int]:
    """How the event time of an element is found: its record's `field` when set and not
    null, else its message's timestamp."""
    if field is None:
        return lambda value, event: event.message.timestamp

    def from_field(value: Any, event: Event[Any, Any]) -> int:
        t = getattr(value, field, None)
        return event.message.timestamp if t is None else to_ms(t)

    return from_field


class _Index:
    """The open windows of one store partition, by close time (lazily pruned), and for
    sessions the session starts of each key.

    The close times queued are a heap of ints, each with the windows queued at it (`due`):
    the windows of one time span share a close time, every key's, so a heap of
    (close time, window) pairs held thousands of entries per close time and compared pairs,
    close times equal, by their window's bytes at every push and pop. A close time's windows
    are closed in store-key order, the order such a heap popped them in: a replay after a
    crash closes them in the same order, with the same output numbers (`#k`)."""

    __slots__ = ("close", "due", "heap", "held", "sessions", "store")

    def __init__(self, held: _Held, grace: int, sessions: bool) -> None:
        # Built per holding, not per store: a memory store assigned back is the same object,
        # with the windows others opened and closed meanwhile restored into it.
        self.held = held
        self.store = store = held.store
        self.heap: list[int] = []  # the close times queued
        self.due: dict[int, list[bytes]] = {}  # close time -> the windows queued at it
        self.close: dict[bytes, int] = {}  # window -> its close time, as queued last
        self.sessions: dict[bytes, list[int]] | None = {} if sessions else None
        for raw, value in store.items():
            self.add(raw, value.end + grace)

    def add(self, raw: bytes, close_at: int) -> None:
        if self.close.get(raw) == close_at:
            return  # queued already: one entry per window (and per session end)
        self.close[raw] = close_at
        queued = self.due.get(close_at)
        if queued is None:
            self.due[close_at] = [raw]
            heappush(self.heap, close_at)
        else:
            queued.append(raw)
        if self.sessions is not None:
            key, start = split_key(raw)
            starts = self.sessions.setdefault(key, [])
            if start not in starts:
                starts.append(start)
                starts.sort()

    def forget(self, raw: bytes) -> None:
        self.close.pop(raw, None)
        if self.sessions is not None:
            key, start = split_key(raw)
            starts = self.sessions.get(key)
            if starts is not None and start in starts:
                starts.remove(start)
                if not starts:
                    del self.sessions[key]


class WindowedAggregate(Stream[Any]):
    """`aggregate` into a windowed table (see the module docstring)."""

    _op = "aggregate"
    _changes_values = True

    def __init__(
        self,
        up: Stream[Any],
        table: Table[Any, Any],
        fold: Callable[[Any, Any], Any],
        row: Callable[[Any, Window, Any], Any],
        emit: str,
        late: Topic[Any] | None,
        merge: Callable[[Any, Any], Any] | None,
        checks: Sequence[tuple[str, Callable[[Any], Any]]] = (),
    ) -> None:
        super().__init__(up._worker, up, up._source)
        spec = table.window
        assert spec is not None
        if emit not in ("updates", "final"):
            raise ValueError(f"aggregate: emit must be 'updates' or 'final', got {emit!r}")
        if isinstance(spec, Session) and merge is None:
            raise ValueError(f"table {table.name!r}: session windows need merge=")
        self._spec = spec
        self._grace = spec.grace
        self._table = table
        self._fold = fold
        self._row = row
        self._final = emit == "final"
        self._late = late
        self._merge = merge
        self._checks = tuple(checks)  # (state attribute, its reduce hook's result check)
        self._fold_async = _is_async(fold)
        self._merge_async = merge is not None and _is_async(merge)
        if table.row is None:
            table.row = row
        self._event_time = event_time_of(_timestamp_field(up))
        self._decode_key = key_codec(table.key_type).decode
        self._live: TablePartitions = self._worker.tables.attach(
            table, [t.name for t in up._source.topics]
        )
        self._indexes: dict[int, _Index] = {}
        # Whether upstream hands over its buffer's events as they are (see `take_run`).
        self._direct = hands_over_events(up)
        # Source partitions as the skip map names them, by their bytes in position headers.
        self._names: dict[bytes, str] = {}
        # Decoded keys by their bytes (a row needs the key; most keys come back often).
        self._keys: dict[bytes, Any] = {}
        # Windows by their store key's start bytes (see `_window`).
        self._windows: dict[bytes, Window] = {}
        # A tumbling window's, by its start (its end follows from it).
        self._spans: dict[int, Window] = {}
        self._out: list[Element] = []
        self._out_at = 0
        self._closings = _Closing(up._source)
        # The worker's `close_windows_epoch` last acted on.
        self.closed_epoch = self._worker.close_windows_epoch
        self._worker.windowed.append(self)

    async def _pull(self) -> Pulled:
        if self._out_at >= len(self._out):
            self._out, self._out_at = [], 0
            await self._fold_run()
            if not self._out:
                return EMPTY
        element = self._out[self._out_at]
        self._out_at += 1
        return element

    def _deadline(self) -> float | None:
        if self._closings.due():
            return 0.0  # pull again at once: tombstones to write
        return super()._deadline()

    async def _pull_many(self, most: int) -> tuple[list[Any], list[Carrier]]:
        # The folded run's outputs at once (a `runs()` loop downstream), no `_pull` each.
        if self._out_at >= len(self._out):
            self._out, self._out_at = [], 0
            await self._fold_run()
        out, i = self._out, self._out_at
        j = min(len(out), i + most)
        self._out_at = j
        return [v for v, _ in out[i:j]], [c for _, c in out[i:j]]

    async def __anext__(self) -> Any:
        # `Stream.__anext__` with the pull inlined: an agent iterating the aggregate directly
        # takes its outputs with no `_pull` coroutine each.
        current = self._current
        if current is not None:
            self._current = None
            ack_carrier(current)
        out, i = self._out, self._out_at
        while i >= len(out):
            self._out, self._out_at = [], 0
            await self._fold_run()
            out, i = self._out, self._out_at
            if i < len(out):
                break
            source = self._source
            if source.closed:
                raise StopAsyncIteration
            await source.wait(self._deadline())
        self._out_at = i + 1
        value, self._current = out[i]
        return value

    def _index(self, q: int, held: _Held) -> _Index:
        index = self._indexes.get(q)
        if index is None or index.held is not held:
            index = self._indexes[q] = _Index(held, self._grace, isinstance(self._spec, Session))
        return index

    async def _fold_run(self) -> None:
        up = self._up
        assert up is not None
        run = _Run(self._closings)
        self._closings.flush(run)
        values, carriers = await take_run(up, self._direct)
        if not values:
            await self._close_all(run)
            await self._send(run)
            return
        worker = self._worker
        table, live = self._table, self._live
        row, spec, grace, final = self._row, self._spec, self._grace, self._final
        session = isinstance(spec, Session)
        fixed = cast("Tumbling | Hopping", spec)
        # A tumbling window is folded inline (below): one window, no lists per element.
        size = spec.size if type(spec) is Tumbling else 0
        fold = self._fold
        state_type, checks = table.state_type, self._checks
        encode = table.state_codec.encode
        event_time = self._event_time
        names, keys, window_of = self._names, self._keys, self._window
        if len(keys) > _KEYS_MAX:
            keys.clear()
        records, partitions, held, finished = run.records, run.partitions, run.held, run.finished
        spans = self._spans
        last_offsets: Any = None
        last_held: Any = _NO_HELD
        store: Any = None
        get: Any = None
        put: Any = None
        positions: dict[str, int] = {}
        index: _Index | None = None
        last_q = -1
        own_src = ""
        own_prefix = b""
        # A run is taken whole before it is folded: its folds share the loop as an agent does
        # between elements (`SourceStream.share_loop`), as `Aggregate._fold_run` does.
        source = self._source
        until_check = source.until_check
        for value, carrier in zip(values, carriers, strict=True):
            until_check -= 1
            if not until_check:
                await source.share_loop()
                until_check = source.until_check
            if type(carrier) is not Event:
                await worker.dead_letter(
                    carrier, TypeError("aggregate takes single elements, not batches"), self._agent
                )
                continue
            event = carrier
            m = event.message
            if event._offsets is not last_offsets or last_offsets.closed or last_held.closed:
                h = await held_store(live, event)
                if h is None:
                    continue  # revoked: the partition's new owner handles it
                store, last_q, last_offsets, last_held = h.store, m.partition, event._offsets, h
                get, put, positions = store.get, store.put, store.positions
                own_src = f"{m.topic}:{m.partition}"
                own_prefix = f"{own_src}:".encode()
                index = self._index(last_q, h)
                run.stretch(h)
                run.stores[last_q] = store
            assert index is not None
            raw_key = m.key
            if raw_key is None:
                await worker.dead_letter(
                    carrier, ValueError("aggregate needs a key; this element has none"), self._agent
                )
                continue
            # The source position: carried in a header through repartitions, else our own.
            mark: bytes | None = None
            for name, header in m.headers:
                if name == POSITION_HEADER:
                    mark = header
                    break
            if mark is None:
                src = own_src
                offset = m.offset
                mark = own_prefix + str(offset).encode()
            else:
                head, _, tail = mark.rpartition(b":")
                src = names.get(head)  # type: ignore[assignment]
                try:
                    if src is None:
                        src = names[head] = source_partition(head)
                    offset = int(tail)
                except ValueError:  # UnicodeDecodeError too
                    # Not a position streamc wrote: the skip rule cannot place the element.
                    await worker.dead_letter(carrier, unreadable_position(mark), self._agent)
                    continue
            try:
                t = event_time(value, event)
            except Exception as exc:
                await worker.dead_letter(carrier, exc, self._agent)
                continue
            now = positions.get(STREAM_TIME, _NO_TIME)
            key = event._key
            if key is _UNDECODED:
                key = keys.get(raw_key, _UNDECODED)
                if key is _UNDECODED:
                    key = keys[raw_key] = event.key
                else:
                    event._key = key
            if offset <= positions.get(src, -1):
                # A replay: folded already. Its stream time counts (a run may have reached
                # the changelog without its skip map), and what it closed is closed again:
                # a window whose row may not have been delivered is still stored.
                if t > now:
                    positions[STREAM_TIME] = t
                heap = index.heap
                if heap and heap[0] <= t:
                    self._close(run, store, index, t, last_q, event)
                if not final:
                    for raw, w in self._windows_of(store, index, raw_key, t):
                        run.emit(event, row(key, window_of(raw, w), w.state), raw_key, t, key=key)
                run.done(event)
                continue
            if size:
                start = t - t % size
                end = start + size
                close_at = end + grace
                if close_at <= (t if t > now else now):  # its one window is closed
                    await self._too_late(event, value, t, now)
                    continue
                raw = raw_key + (start + 2**63).to_bytes(8, "big")  # window_key
                opened = index.close
                try:
                    # A window the index does not hold is new: no lookup (a RocksDB miss).
                    w = get(raw) if raw in opened else None
                    state = fold(state_type() if w is None else w.state.__copy__(), value)
                    if checks or type(state) is not state_type:  # a coroutine, a wrong type
                        state = await self._folded(state)
                    w = Windowed(end, state)
                    data = encode(w)
                except asyncio.CancelledError:
                    raise
                except BaseException as exc:
                    await worker.dead_letter(carrier, exc, self._agent)
                    continue
                put(raw, w, data)
                heap = index.heap
                if opened.get(raw) != close_at:  # else queued already, at that close time
                    opened[raw] = close_at  # `index.add`, inlined (no sessions here)
                    queued = index.due.get(close_at)
                    if queued is None:
                        index.due[close_at] = [raw]
                        heappush(heap, close_at)
                    else:
                        queued.append(raw)
                # `run.record`, inlined: its store is the stretch's, set above.
                records.append((raw, data, [(POSITION_HEADER, mark)]))
                partitions.append(last_q)
                if not final:
                    # One window per start: no store key to slice, no `_window` call.
                    window = spans.get(start)
                    if window is None:
                        if len(spans) >= _TIMES_MAX:
                            spans.clear()
                        window = spans[start] = Window(start, end)
                    run.emit(event, row(key, window, state), raw_key, t, -1, key)
                positions[src] = offset
                if t > now:
                    positions[STREAM_TIME] = t
                if heap and heap[0] <= t:
                    self._close(run, store, index, t, last_q, event)
                if not event._acked:  # `run.hold`, inlined
                    held.append((last_offsets, m.offset))
                finished.append(event)
                continue
            try:
                if session:
                    changed = await self._fold_session(store, index, raw_key, value, t, now)
                else:
                    changed = self._fold_fixed(get, index.close, raw_key, value, t, now, fixed)
                    for _, w in changed:  # a coroutine, a wrong type or reduce results
                        if checks or type(w.state) is not state_type:
                            w.state = await self._folded(w.state)
                encoded = [(raw, w, encode(w)) for raw, w in changed if w is not None]
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                await worker.dead_letter(carrier, exc, self._agent)
                continue
            if not changed:  # every window of it is closed
                await self._too_late(event, value, t, now)
                continue
            if session:
                for raw, w in changed:
                    if w is None:
                        store.delete(raw)
                        index.forget(raw)
                        run.record(last_q, store, raw, None, mark)
            # Every update goes on its own event holding the run's `_Rows`, never on the
            # element's: a tombstone waits for the delivery of every row emitted before it.
            for raw, w, data in encoded:
                put(raw, w, data)
                if session or index.close.get(raw) != w.end + grace:
                    index.add(raw, w.end + grace)  # else queued already, at that close time
                run.record(last_q, store, raw, data, mark)
                if not final:
                    run.emit(event, row(key, window_of(raw, w), w.state), raw_key, t, key=key)
            positions[src] = offset
            if t > now:
                positions[STREAM_TIME] = t
            heap = index.heap
            if heap and heap[0] <= t:
                # Not only when t moves stream time: after a crash, windows whose close is
                # not in the changelog are stored with close times stream time passed.
                self._close(run, store, index, t, last_q, event)
            run.hold(event)
        source.until_check = until_check
        await self._send(run)

    def _window(self, raw: bytes, w: Windowed[Any]) -> Window:
        """The window of a stored one, shared: the keys of a partition share a few windows,
        and a frozen dataclass costs more to build than the rest of a row."""
        windows = self._windows
        end = w.end
        suffix = raw[-8:]
        window = windows.get(suffix)
        if window is None or window.end_ms != end:  # a session's end moves
            if len(windows) >= _TIMES_MAX:
                windows.clear()
            window = windows[suffix] = Window(int.from_bytes(suffix, "big") - 2**63, end)
        return window

    def _windows_of(
        self, store: Store, index: _Index, raw_key: bytes, t: int
    ) -> list[tuple[bytes, Any]]:
        """The stored windows an event of `raw_key` at `t` is in (for a replay's rows)."""
        spec = self._spec
        out = []
        if isinstance(spec, Session):
            assert index.sessions is not None
            for start in index.sessions.get(raw_key, ()):
                raw = window_key(raw_key, start)
                w = store.get(raw)
                if w is not None and start <= t < w.end:
                    out.append((raw, w))
            return out
        is_open = index.close
        for start in window_starts(spec, t):
            raw = window_key(raw_key, start)
            # Open ones only: a closed window stays stored until its tombstone is written,
            # and a row of it here would be one the element never emitted (shifting `#k`).
            if raw in is_open:
                w = store.get(raw)
                if w is not None:
                    out.append((raw, w))
        return out

    def _fold_fixed(
        self,
        get: Callable[[bytes], Any],
        opened: dict[bytes, int],
        raw_key: bytes,
        value: Any,
        t: int,
        now: int,
        spec: Tumbling | Hopping,
    ) -> list[tuple[bytes, Any]]:
        """Fold into every open window of `t` (hopping; a tumbling one is folded inline in
        `_fold_run`): [(store key, new Windowed)], [] if late. The
        states are the fold's results as they are: the caller awaits and checks them.
        `opened`: the partition's stored windows (its index): a window not in it is new, and
        not looked up (a miss costs a RocksDB read)."""
        grace, size = self._grace, spec.size
        clock = max(now, t)
        state_type = self._table.state_type
        fold = self._fold
        out: list[tuple[bytes, Any]] = []
        for start in window_starts(spec, t):
            end = start + size
            if end + grace <= clock:
                continue  # closed
            raw = raw_key + (start + 2**63).to_bytes(8, "big")  # window_key
            w = get(raw) if raw in opened else None
            state = state_type() if w is None else w.state.__copy__()
            out.append((raw, Windowed(end, fold(state, value))))
        return out

    async def _fold_session(
        self, store: Store, index: _Index, raw_key: bytes, value: Any, t: int, now: int
    ) -> list[tuple[bytes, Any]]:
        """Fold into the session `t` extends, merging those it bridges: the sessions that go
        as (store key, None), then the new one; [] if late."""
        gap, grace = cast(Session, self._spec).gap, self._grace
        clock = max(now, t)
        sessions = index.sessions
        assert sessions is not None
        touching: list[tuple[bytes, Any]] = []
        for start in sessions.get(raw_key, ()):
            raw = window_key(raw_key, start)
            w = store.get(raw)
            if w is None:
                continue
            last = w.end - gap
            if start - gap <= t <= last + gap:
                touching.append((raw, w))
        first = min([t] + [split_key(raw)[1] for raw, _ in touching])
        last = max([t] + [w.end - gap for _, w in touching])
        if last + gap + grace <= clock:
            return []  # the session it would make is closed already
        state: Any
        if touching:
            state = touching[0][1].state.__copy__()
            merge = self._merge
            assert merge is not None
            for _, w in touching[1:]:
                state = merge(state, w.state.__copy__())
                if self._merge_async or inspect.isawaitable(state):
                    state = await state
        else:
            state = self._table.state_type()
        state = await self._call_fold(state, value)
        new = window_key(raw_key, first)
        out: list[tuple[bytes, Any]] = [(raw, None) for raw, _ in touching if raw != new]
        out.append((new, Windowed(last + gap, state)))
        return out

    async def _call_fold(self, state: Any, value: Any) -> Any:
        state = self._fold(state, value)
        if type(state) is self._table.state_type and not self._checks:
            return state  # the usual case, a plain fold: nothing more to await or check
        return await self._folded(state)

    async def _folded(self, state: Any) -> Any:
        """The fold's result awaited if need be, its type checked, its reduce results too."""
        state_type = self._table.state_type
        if type(state) is not state_type:
            if self._fold_async or inspect.isawaitable(state):
                state = await state
            if type(state) is not state_type:
                raise TypeError(
                    f"fold of table {self._table.name!r} returned {type(state).__name__}, "
                    f"not {state_type.__name__}"
                )
        for attr, check in self._checks:
            setattr(state, attr, check(getattr(state, attr)))
        return state

    def _close(
        self,
        run: _Run,
        store: Store,
        index: _Index,
        clock: int,
        q: int,
        event: Event[Any, Any] | None,
    ) -> None:
        """Close every window of the partition whose end + grace <= `clock`, in end order:
        with `emit="final"` its row goes downstream; its tombstone waits (`_Outputs`)."""
        heap, due, close = index.heap, index.due, index.close
        key_decode = self._decode_key
        while heap and heap[0] <= clock:
            close_at = heap[0]
            queued = due[close_at]
            queued.sort()  # store-key order (see `_Index`)
            for raw in queued:
                if close.get(raw) != close_at:
                    continue  # gone, or a session that grew (its new close time is queued)
                index.forget(raw)
                if not self._final:
                    # The index holds only stored windows, and with `emit updates` closing
                    # needs no state: no store read (on RocksDB, a read once evicted).
                    run.close(event, index.held, q, raw)
                    continue
                w = store.get(raw)
                if w is None:
                    continue
                run.close(event, index.held, q, raw)
                key_bytes, start = split_key(raw)
                key = key_decode(key_bytes)
                result = self._row(key, Window(start, w.end), w.state)
                run.emit(event, result, key_bytes, w.end - 1, q, key)
            # Unqueued only once all are closed: a row that raised leaves the rest queued.
            heappop(heap)
            del due[close_at]

    async def _close_all(self, run: _Run) -> None:
        """At the end of `streamc run`'s input: stream time moves past every window."""
        epoch = self._worker.close_windows_epoch
        if epoch == self.closed_epoch:
            return
        self.closed_epoch = epoch
        for q, h in list(self._live.held.items()):
            if not h.ready.is_set():
                continue
            store = h.store
            index = self._index(q, h)
            if not index.heap:
                continue
            run.stretch(h)
            clock = max(index.heap)
            store.positions[STREAM_TIME] = max(store.positions.get(STREAM_TIME, _NO_TIME), clock)
            self._close(run, store, index, clock, q, None)

    async def _too_late(self, event: Event[Any, Any], value: Any, t: int, now: int) -> None:
        worker = self._worker
        if self._late is None:
            exc = LateError(
                f"event time {Time.from_ms(t).rfc3339()} is past its windows' grace "
                f"(stream time {Time.from_ms(now).rfc3339()})"
            )
            await worker.dead_letter(event, exc, self._agent)
            return
        await worker.forward(self._late, value, event)
        event._ack()

    async def _send(self, run: _Run) -> None:
        if await send_run(self._worker, self._table.changelog.name, run):
            self._out = run.out


class _Run:
    """What one run folded: changelog records, outputs, the elements it is done with, and
    the entries it closed (`_Outputs`)."""

    __slots__ = (
        "fan",
        "finished",
        "flushed",
        "held",
        "last",
        "out",
        "outputs",
        "partitions",
        "queue",
        "records",
        "rows",
        "shut",
        "stores",
        "stretches",
    )

    def __init__(self, queue: _Closing) -> None:
        self.records: list[tuple[bytes | None, bytes | None, Headers]] = []
        self.partitions: list[int] = []
        # Each partition's store, set when a stretch of it starts or a record is added: the
        # run's records per partition are counted once, at the send (`send_run`).
        self.stores: dict[int, Any] = {}
        self.out: list[Element] = []
        self.held: list[Any] = []
        self.finished: list[Event[Any, Any]] = []
        # (store held, first record, first output) of each stretch of one partition's elements
        self.stretches: list[tuple[_Held, int, int]] = []
        # The element whose outputs are being emitted, and how many it emitted before: of
        # entries it closed (`shut`), and others (`fan`).
        self.last: Event[Any, Any] | None = None
        self.fan = 0
        self.shut = 0
        self.queue = queue
        self.outputs = _Outputs(queue.wake)
        self.rows: _Rows | None = None  # of the elements of the current source partition
        self.flushed: list[_Outputs] = []  # earlier runs' whose tombstones this run writes

    def stretch(self, held: _Held) -> None:
        self.stretches.append((held, len(self.records), len(self.out)))
        held.folding = True  # a store revoked now holds states its changelog may not

    def record(
        self, q: int, store: Any, raw: bytes, data: bytes | None, mark: bytes | None
    ) -> None:
        # A list: the Kafka transport's batch builder takes exactly that (no copy per record).
        headers: Headers = [] if mark is None else [(POSITION_HEADER, mark)]
        self.records.append((raw, data, headers))
        self.partitions.append(q)
        self.stores[q] = store

    def close(self, event: Event[Any, Any] | None, held: _Held, q: int, raw: bytes) -> None:
        """Entry `raw` of store q closed (it has left the index): its tombstone, and its
        removal from the store, wait until every row emitted so far is done with
        (`_Outputs`). One of no element (the end of `streamc run`'s input, no crash to
        survive) is tombstoned now."""
        if event is None:
            held.store.delete(raw)
            self.record(q, held.store, raw, None, None)
            return
        self.outputs.close(event, held, q, raw)

    def emit(
        self,
        event: Event[Any, Any] | None,
        value: Any,
        raw_key: bytes,
        ts: int,
        q: int = -1,
        key: Any = _UNDECODED,
        closing: bool = False,
    ) -> None:
        """An output row, carried by its own event: it holds the source message of the
        element that produced it (`event`) until downstream is done with it. An element's
        second and later outputs carry positions of their own (`_fanned`), and so does each
        output of no element (`q`: the store partition it comes from). `key`: the row's key
        decoded, its event's `key` (else the raw bytes).

        `closing`: the row of an entry the element closed, when the element has outputs of
        another kind too (a join's pairs). Those are numbered apart, the k-th (from 0) under
        `#ck`: a replay closes again a first part of what the element closed (the tombstones
        written are the last closed), whatever it emits again of its other outputs (a pair
        goes again only while the element's own entry is stored), so one counter for both
        would give a row closed again another number than it had."""
        if event is None:
            self.out.append((value, _detached(value, raw_key, ts, q, key)))
            return
        m = event.message
        rows = self.rows
        if rows is None or rows.offsets is not event._offsets:
            rows = self.rows = self.outputs.rows(event._offsets)
        headers = m.headers
        if event is not self.last:
            self.last, self.fan, self.shut = event, 0, 0
            event._offsets.hold(m.offset)
            rows.elements.append(m.offset)
        if closing:
            headers = _fanned(m, f"c{self.shut}")
            self.shut += 1
        else:
            fan = self.fan
            if fan:
                headers = _fanned(m, fan)
            self.fan = fan + 1
        rows.refs += 1
        message = _Message(m.topic, m.partition, m.offset, ts, raw_key, None, headers)
        self.out.append((value, Event(message, value, cast(Any, rows), None, False, key)))

    def hold(self, event: Event[Any, Any]) -> None:
        if not event._acked:
            self.held.append((event._offsets, event.message.offset))
        self.finished.append(event)

    def done(self, event: Event[Any, Any]) -> None:
        self.finished.append(event)


class _Rows:
    """The carrier offsets of the rows a run emitted for elements of one source partition:
    it counts the rows' references (downstream holds and acks them as it would the
    message's) and holds each element's message until all are done; then its run's
    `_Outputs` learns it."""

    __slots__ = ("elements", "offsets", "outputs", "refs")

    def __init__(self, offsets: PartitionOffsets, outputs: _Outputs) -> None:
        self.offsets = offsets
        self.outputs = outputs
        self.elements: list[int] = []  # the offsets of the elements it holds
        self.refs = 0

    @property
    def closed(self) -> bool:
        return self.offsets.closed

    def hold(self, offset: int) -> None:
        self.refs += 1

    def release(self, offset: int) -> None:
        self.refs -= 1
        if self.refs == 0:
            self.drop()

    def abandon(self, offset: int) -> None:
        # Dropped on revocation, never delivered: its partition's new owner emits it again
        # (and the tombstones of the revoked store are never written here).
        self.release(offset)

    def drop(self) -> None:
        """Done: delivered, or dropped with a revoked partition."""
        offsets = self.offsets
        for offset in self.elements:
            offsets.release(offset)
        self.elements = []
        self.outputs.row_done()


class _Outputs:
    """The rows one run emitted (`_Rows`) and the entries it closed. A closed entry's
    tombstone, and its removal from the store, wait until every row the operator emitted
    before it is done with, this run's and earlier runs' (`_Closing`): written first, a
    crash before a row's delivery would lose the row, since the replay of its element finds
    nothing to close (a final window, an unmatched join entry) or no partner to pair with.
    It holds each closing element's message until the tombstones are delivered, so no
    commit passes the element while a crash would leave its closes undone: its replay
    closes them again, and their rows go out with the same positions."""

    __slots__ = ("closers", "closes", "last", "pending", "wake")

    def __init__(self, wake: Callable[[], None]) -> None:
        self.pending = 0  # `_Rows` not done yet
        self.closes: list[tuple[_Held, int, bytes]] = []  # (store, partition, entry)
        self.closers: list[tuple[PartitionOffsets, int]] = []  # the messages it holds
        self.last: Event[Any, Any] | None = None
        self.wake = wake

    def rows(self, offsets: PartitionOffsets) -> _Rows:
        self.pending += 1
        return _Rows(offsets, self)

    def row_done(self) -> None:
        self.pending -= 1
        if self.pending == 0:
            self.wake()  # the operator's next pull writes what waited for these rows

    def close(self, event: Event[Any, Any], held: _Held, q: int, raw: bytes) -> None:
        self.closes.append((held, q, raw))
        if event is not self.last:
            self.last = event
            m = event.message
            event._offsets.hold(m.offset)
            self.closers.append((event._offsets, m.offset))

    def release_closers(self) -> None:
        for offsets, offset in self.closers:
            offsets.release(offset)
        self.closers = []


class _Closing:
    """An operator's `_Outputs` whose tombstones are not written yet, oldest first."""

    __slots__ = ("queue", "wake")

    def __init__(self, source: SourceStream[Any]) -> None:
        self.queue: deque[_Outputs] = deque()
        self.wake = source.wake

    def due(self) -> bool:
        """Whether tombstones wait for a pull: the oldest run's rows are all done. A run
        whose closes emitted no row (a join's matched entries) is due at once, and nothing
        wakes the agent for it: its deadline asks for the pull."""
        queue = self.queue
        return bool(queue) and queue[0].pending <= 0

    def flush(self, run: _Run) -> int:
        """Into `run`, the tombstones of the oldest runs whose rows are all done, in close
        order reversed; the number of records added. Reversed: a write cut short by a crash
        leaves the first closes stored, so the replay closes them again in the order and
        with the output numbers (`#k`) they had."""
        queue = self.queue
        ready: list[_Outputs] = []
        while queue and queue[0].pending <= 0:
            ready.append(queue.popleft())
        last: _Held | None = None
        for outputs in reversed(ready):
            run.flushed.append(outputs)
            for h, q, raw in reversed(outputs.closes):
                if h.closed:
                    continue  # the partition's new owner closes it again
                if h is not last:
                    run.stretch(h)
                    last = h
                store = h.store
                store.delete(raw)
                run.record(q, store, raw, None, None)
        return len(run.records)


async def send_run(worker: Any, changelog: str, run: _Run) -> bool:
    """Write a run's changelog records (and a skip map per store partition written to), then
    ack the run's folded elements (what they sent and the changelog delivery hold them now);
    False if the records never went out (the worker is stopping: nothing may be acked)."""
    if any(h.closed for h, _, _ in run.stretches):
        # A store was revoked while this run waited (a slow hook, another store's
        # restore): its new owner may be writing its changelog already, so what was
        # folded or closed in it here is neither written nor published.
        out = run.out
        run.records, run.partitions, run.out, folded = _without_closed(
            run.stretches, run.records, run.partitions, out
        )
        run.stores = {q: s for q, (s, _) in folded.items()}
        kept = {id(carrier) for _, carrier in run.out}
        for _, carrier in out:
            rows = cast(Event[Any, Any], carrier)._offsets
            if id(carrier) not in kept and isinstance(rows, _Rows):
                rows.release(-1)  # never goes downstream
    held = run.held
    for outputs in run.flushed:
        held = held + outputs.closers
    if run.records:
        # In the order the partitions first appear, as their records were applied; a
        # partition whose stretch wrote nothing (replays only) writes no skip map.
        counts = Counter(run.partitions)
        for q in counts:
            run.records.append(map_record(run.stores[q].positions))
            run.partitions.append(q)
        delivery = await worker.send_changelog(changelog, run.records, run.partitions)
        if delivery is None:
            worker._hold_for_good(held)
            return False
        for q, count in counts.items():
            run.stores[q].applied(count + 1)  # its data records and its skip map
        worker.tables.sent(delivery)
        worker._hold(cast("Awaitable[Delivery]", delivery), held)
    for outputs in run.flushed:
        outputs.release_closers()  # the changelog delivery holds them now
    outputs = run.outputs
    if outputs.pending or outputs.closes:
        run.queue.queue.append(outputs)
    for h, _, _ in run.stretches:
        h.folding = False
    for event in run.finished:
        event._ack()  # its outputs (children) and its changelog delivery hold it now
    return True


class _Message(msgspec.Struct):
    """A row's message: one per row, so a Struct (its constructor runs in C)."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: Any


class _NoOffsets:
    """The offsets of an output that no input message holds (closed at the end of input)."""

    closed = False

    def release(self, offset: int) -> None:
        pass

    def hold(self, offset: int) -> None:
        pass


def _fanned(m: Any, k: int | str) -> Headers:
    """The headers of the k-th (k >= 1) output of the element of message `m` (or its k-th
    closing one, k `c0`, `c1`, ...: `_Run.emit`): a position of its own, under the source
    `<source>#k`. A stateful step further on skips a position at or below the highest it
    applied of that source, so outputs sharing their element's position would all count as
    replays of the first. The k-th outputs of a source partition's elements arrive in order,
    like the elements, so the skip rule holds."""
    _, src, offset = _position(m)
    mark = f"{src}#{k}:{offset}".encode()
    return (*(h for h in m.headers if h[0] != POSITION_HEADER), (POSITION_HEADER, mark))


# Positions of outputs that no element made (at the end of `streamc run`'s input): each its
# own, increasing, so a stateful step further on never takes one for a replay.
_ENDED = itertools.count()


def _detached(
    value: Any, raw_key: bytes, ts: int, q: int = -1, key: Any = _UNDECODED
) -> Event[Any, Any]:
    mark = f"streamc.end_of_input:0:{next(_ENDED)}".encode()  # a source like any other
    message = _Message("", q, -1, ts, raw_key, None, ((POSITION_HEADER, mark),))
    return Event(message, value, cast(Any, _NoOffsets()), None, False, key)


def _position(m: Any) -> tuple[bytes, str, int]:
    for name, header in m.headers:
        if name == POSITION_HEADER:
            head, _, tail = header.rpartition(b":")
            try:
                return header, source_partition(head), int(tail)
            except ValueError:
                raise unreadable_position(header) from None
    src = f"{m.topic}:{m.partition}"
    return f"{src}:{m.offset}".encode(), src, m.offset


def _timestamp_field(node: Stream[Any] | None) -> str | None:
    """The timestamp field declared on a topic this stream reads, directly or upstream."""
    while node is not None:
        for topic in node._source.topics:
            field = getattr(topic, "timestamp_field", None)
            if field is not None:
                return cast(str, field)
        node = node._up
    return None


def _is_async(fn: Callable[..., Any]) -> bool:
    target: Any = fn
    while hasattr(target, "func"):
        target = target.func
    return inspect.iscoroutinefunction(target)


def rows_of(
    row: Callable[..., Any] | None,
    items: Iterator[tuple[bytes, Any]],
    decode_key: Callable[[bytes], Any],
) -> dict[Any, Any]:
    """The rows of a windowed table's stored windows: {(key, Window): row} (the states
    themselves without a row function)."""
    out: dict[Any, Any] = {}
    for raw, w in items:
        key_bytes, start = split_key(raw)
        key = decode_key(key_bytes)
        window = Window(start, w.end)
        out[(key, window)] = w.state if row is None else row(key, window, w.state)
    return out
