"""Windowed aggregation: tumbling, hopping and session windows over event time, and the
index of each store partition's open windows. The window kinds and store-key layout are in
`window_types.py`, event and stream time in `event_time.py`, the run and closing machinery
shared with stream joins in `closing.py`.

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
from collections.abc import Callable, Sequence
from heapq import heappop, heappush
from typing import TYPE_CHECKING, Any, cast

from ..events import _UNDECODED, EMPTY, Carrier, Element, Event, Pulled, ack_carrier
from ..records import Time, key_codec
from ..stream import Stream
from .aggregate import (
    _KEYS_MAX,
    _NO_HELD,
    hands_over_events,
    held_store,
    take_run,
)
from .changelog import POSITION_HEADER, source_partition, unreadable_position
from .closing import _Closing, _Run, send_run
from .event_time import _NO_TIME, STREAM_TIME, LateError, _timestamp_field, event_time_of
from .window_types import (
    _TIMES_MAX,
    Hopping,
    Session,
    Tumbling,
    Window,
    Windowed,
    split_key,
    window_key,
    window_starts,
)

if TYPE_CHECKING:
    from ..topic import Topic
    from .store import Store
    from .table import Table, TablePartitions, _Held

__all__ = ["WindowedAggregate"]

_RUN_MAX = 1000


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


def _is_async(fn: Callable[..., Any]) -> bool:
    target: Any = fn
    while hasattr(target, "func"):
        target = target.func
    return inspect.iscoroutinefunction(target)
