"""`Stream.distinct`: drop an element whose key (or a field) was already seen within a time
span of event time, on its partition.

A stateful operation with a table of its own, `<agent>-distinct-<n>` (changelog
`<app>-<agent>-distinct-<n>-changelog`, created when the agent is built): per partition, the
event time of the last element let through for each key (or field value). An element passes
when none is stored, or the stored one is `within` ms or more away from its own; it is then
stored. Entries expire when stream time (the largest event time seen, kept in the skip map as
for windows) reaches their time + `within`: from then on they no longer count, and a tombstone
(when stream time next rises, or later: see below) keeps the store bounded. Exact across
crashes by the tables' changelog, positions and skip rule: a replayed element changes
nothing, and is passed on again only if it was let through (at-least-once downstream).

Telling that on replay needs more than the time let through last: a later element of the
crashed run may have overwritten the entry, or expired it. So an entry (`Seen`) also holds the
position of the element that set it and the positions of the key's earlier let-through
elements a replay may still bring back: those whose input offset is not committed yet. Once
committed (this worker committed past them, or started reading past them), they are dropped
from the entry at its next write, and an expired entry is tombstoned only then: per key, the
entry holds no more positions than its let-through elements awaiting a commit.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, cast

import msgspec

from ..events import EMPTY, Element, Event, Pulled
from ..stream import Stream
from ..transport import Delivery, Headers
from .aggregate import _NO_HELD, _without_closed, held_store
from .changelog import POSITION_HEADER, map_record
from .closing import _position
from .event_time import _NO_TIME, STREAM_TIME, _timestamp_field, event_time_of

if TYPE_CHECKING:
    from ..offsets import PartitionOffsets
    from .table import TablePartitions, _Held

__all__ = ["Distinct", "Seen"]

_RUN_MAX = 1000


class Seen(msgspec.Struct, array_like=True, frozen=True):
    """A key's entry: the event time let through last, the position (`<source>:<offset>`) of
    the element that let it through, and the positions of the key's earlier let-through
    elements whose input may still be replayed. A changelog written before positions were
    kept holds a bare time (decoded as `int`): `Seen(time)`, where a replay with the stored
    time is taken for the one let through, as then."""

    time: int
    mark: str = ""
    earlier: tuple[str, ...] = ()

    def let_through(self, mark: str, t: int) -> bool:
        if not self.mark:
            return self.time == t
        return mark == self.mark or mark in self.earlier


def _seen(state: Any) -> Seen | None:
    return Seen(state) if type(state) is int else cast("Seen | None", state)


class _Holding:
    """What a run keeps beside one holding of store q: the expiry heap, the expired keys
    waiting for their positions' commit to be tombstoned, and how far each source's
    let-through elements are committed."""

    __slots__ = ("heap", "held", "lingering", "pending", "safe", "starts")

    def __init__(self, held: _Held, heap: list[tuple[int, bytes]]) -> None:
        self.held = held
        self.heap = heap
        self.lingering: dict[bytes, None] = {}  # (ordered, each key once)
        # source -> (position, input offsets, input offset) of let-through elements, in order
        self.pending: dict[str, deque[tuple[int, PartitionOffsets, int]]] = {}
        self.safe: dict[str, int] = {}  # source -> highest position no replay brings back
        self.starts: set[int] = set()  # input partitions' offsets whose start counted

    def reading(self, offsets: PartitionOffsets) -> None:
        """Positions of the input partition itself below where this worker started reading
        were committed before: no replay brings them back."""
        if id(offsets) in self.starts or offsets.start is None:
            return
        self.starts.add(id(offsets))
        src = f"{offsets.tp.topic}:{offsets.tp.partition}"
        if offsets.start - 1 > self.safe.get(src, -1):
            self.safe[src] = offsets.start - 1

    def advance(self) -> bool:
        """Count what was committed since; whether any source's safe position moved."""
        safe = self.safe
        moved = False
        for src, waiting in self.pending.items():
            while waiting:
                position, offsets, offset = waiting[0]
                committed = offsets.committed
                if committed is None or offset >= committed:
                    break
                waiting.popleft()
                if position > safe.get(src, -1):
                    safe[src] = position
                    moved = True
        return moved

    def unsafe(self, seen: Seen) -> tuple[str, ...]:
        """The positions of `seen` a replay may still bring back."""
        safe = self.safe
        if not seen.earlier:  # the usual entry: a position of its own only
            src, _, offset = seen.mark.rpartition(":")
            return (seen.mark,) if src and int(offset) > safe.get(src, -1) else ()
        kept = []
        for mark in (*seen.earlier, seen.mark):
            if mark:
                src, _, offset = mark.rpartition(":")
                if int(offset) > safe.get(src, -1):
                    kept.append(mark)
        return tuple(kept)


class Distinct(Stream[Any]):
    _op = "distinct"

    def __init__(self, up: Stream[Any], within: int, field: Callable[[Any], Any] | None) -> None:
        super().__init__(up._worker, up, up._source)
        if not isinstance(within, int) or within <= 0:
            raise ValueError(f"distinct: within must be a positive number of ms, got {within!r}")
        worker = self._worker
        app = worker.app
        counts = worker.distinct_counts
        n = counts[self._agent] = counts.get(self._agent, 0) + 1
        name = f"{self._agent}-distinct-{n}"
        inputs = up._source.topics
        table = app.tables.get(name)
        if table is None:
            table = app.table(
                name,
                key_type=bytes,
                value_type=int | Seen,
                state_type=int | Seen,
                partitions=max(t.partitions for t in inputs),
            )
        table.ensure = True  # declared after the worker created its topics
        self._table = table
        self._within = within
        self._field = field
        self._event_time = event_time_of(_timestamp_field(up))
        self._live: TablePartitions = worker.tables.attach(table, [t.name for t in inputs])
        # Per holding, not per store: a memory store assigned back is the same object, with
        # the entries others wrote meanwhile restored into it.
        self._holdings: dict[int, _Holding] = {}
        self._out: list[Element] = []
        self._at = 0

    async def _pull(self) -> Pulled:
        if self._at >= len(self._out):
            self._out, self._at = [], 0
            await self._run()
            if not self._out:
                return EMPTY
        element = self._out[self._at]
        self._at += 1
        return element

    def _holding(self, q: int, held: _Held) -> _Holding:
        known = self._holdings.get(q)
        if known is None or known.held is not held:
            within = self._within
            heap = [(cast(Seen, _seen(s)).time + within, raw) for raw, s in held.store.items()]
            heapq.heapify(heap)
            known = self._holdings[q] = _Holding(held, heap)
        return known

    @staticmethod
    def _pending(holding: _Holding, src: str, offset: int, event: Event[Any, Any]) -> None:
        waiting = holding.pending.get(src)
        if waiting is None:
            waiting = holding.pending[src] = deque()
        waiting.append((offset, event._offsets, event.message.offset))

    def _release(self, holding: _Holding, now: int) -> list[bytes]:
        """Delete the lingering expired entries whose positions are committed now, in the
        order they expired, up to the first that is not (commits advance in input order, so
        the ones after it are most likely not either: they wait for a later commit)."""
        store, within, lingering = holding.held.store, self._within, holding.lingering
        gone: list[bytes] = []
        while lingering:
            key = next(iter(lingering))
            seen = _seen(store.get(key))
            if seen is not None and seen.time + within <= now:
                if holding.unsafe(seen):
                    break
                store.delete(key)
                gone.append(key)
            del lingering[key]  # deleted now, or before, or let through again (in the heap)
        return gone

    def _tombstone(self, holding: _Holding, keys: Iterable[bytes], now: int) -> list[bytes]:
        """Delete those of the expired `keys` whose positions no replay brings back any more
        (a replay of an element let through must find its position); the others wait, in
        `holding.lingering`, for a later run."""
        store, within, lingering = holding.held.store, self._within, holding.lingering
        gone: list[bytes] = []
        for key in keys:
            seen = _seen(store.get(key))
            if seen is None or seen.time + within > now:
                lingering.pop(key, None)  # deleted, or let through again: the heap has it
            elif lingering or holding.unsafe(seen):
                lingering[key] = None  # (behind others waiting: they go first)
            else:
                lingering.pop(key, None)
                store.delete(key)
                gone.append(key)
        return gone

    async def _run(self) -> None:
        up = self._up
        assert up is not None
        worker, live, within, field = self._worker, self._live, self._within, self._field
        encode = self._table.state_codec.encode
        records: list[tuple[bytes | None, bytes | None, Headers]] = []
        partitions: list[int] = []
        stores: dict[int, Any] = {}
        out: list[Element] = []
        held: list[Any] = []
        dropped: list[Event[Any, Any]] = []
        store: Any = None
        heap: list[tuple[int, bytes]] = []
        holding: _Holding | None = None
        last_offsets: Any = None
        last_held: Any = _NO_HELD
        # (store held, first record, first output) of each stretch of one partition's elements
        stretches: list[tuple[_Held, int, int]] = []
        q = -1
        while len(out) + len(dropped) < _RUN_MAX:
            if out and up._may_wait():
                break
            element = await up._pull()
            if element is EMPTY:
                break
            value, carrier = cast(Element, element)
            if type(carrier) is not Event:
                await worker.dead_letter(
                    carrier, TypeError("distinct takes single elements, not batches"), self._agent
                )
                continue
            event = carrier
            m = event.message
            if event._offsets is not last_offsets or last_offsets.closed or last_held.closed:
                h = await held_store(live, event)
                if h is None:
                    continue  # revoked: the partition's new owner handles it
                store, q, last_offsets, last_held = h.store, m.partition, event._offsets, h
                holding = self._holding(q, h)
                heap = holding.heap
                stretches.append((h, len(records), len(out)))
                h.folding = True  # a store revoked now holds entries its changelog may not
                holding.reading(last_offsets)
                if holding.advance() and holding.lingering:
                    now = store.positions.get(STREAM_TIME, _NO_TIME)
                    for key in self._release(holding, now):
                        records.append((key, None, ()))
                        partitions.append(q)
                        stores[q] = store
            assert holding is not None
            try:
                t = self._event_time(value, event)
                raw = m.key if field is None else msgspec.json.encode(field(value))
            except Exception as exc:
                await worker.dead_letter(carrier, exc, self._agent)
                continue
            if raw is None:
                out.append((value, carrier))  # no key: nothing to compare it with
                continue
            try:
                mark_bytes, src, offset = _position(m)
            except ValueError as exc:  # a position header streamc did not write
                await worker.dead_letter(carrier, exc, self._agent)
                continue
            mark = mark_bytes.decode()
            positions = store.positions
            seen = _seen(store.get(raw))
            if offset <= positions.get(src, -1):
                # A replay: applied already; passed on again if it was let through.
                if seen is not None and seen.let_through(mark, t):
                    out.append((value, carrier))
                    self._pending(holding, src, offset, event)
                else:
                    dropped.append(event)
            elif (
                seen is not None
                and abs(t - seen.time) < within
                and seen.time + within > positions.get(STREAM_TIME, _NO_TIME)
            ):
                # Only an entry stream time has not expired counts: its tombstone waits for
                # stream time to rise, which a replay after a crash makes it do sooner.
                dropped.append(event)
            else:
                entry = Seen(t, mark, () if seen is None else holding.unsafe(seen))
                data = encode(entry)
                store.put(raw, entry, data)
                heapq.heappush(heap, (t + within, raw))
                records.append((raw, data, ((POSITION_HEADER, mark_bytes),)))
                partitions.append(q)
                stores[q] = store
                positions[src] = offset
                if not event._acked:
                    held.append((event._offsets, m.offset))
                out.append((value, carrier))
                self._pending(holding, src, offset, event)
            if t > positions.get(STREAM_TIME, _NO_TIME):
                positions[STREAM_TIME] = t
                if heap and heap[0][0] <= t:
                    lingering = holding.lingering
                    if lingering:  # behind others waiting: `_release` takes them in order
                        while heap and heap[0][0] <= t:
                            lingering[heapq.heappop(heap)[1]] = None
                    else:
                        expired = []
                        while heap and heap[0][0] <= t:
                            expired.append(heapq.heappop(heap)[1])
                        for key in self._tombstone(holding, expired, t):
                            records.append((key, None, ()))
                            partitions.append(q)
                            stores[q] = store
        if any(h.closed for h, _, _ in stretches):
            # A store was revoked while this run waited (another store's restore, a slow
            # upstream): its new owner may be writing its changelog already, so what was
            # stored or expired in it here is neither written nor passed on.
            records, partitions, out, folded = _without_closed(stretches, records, partitions, out)
            stores = {p: s for p, (s, _) in folded.items()}
        if records:
            counts = {p: partitions.count(p) + 1 for p in stores}
            for p, s in stores.items():
                records.append(map_record(s.positions))
                partitions.append(p)
            delivery = await worker.send_changelog(self._table.changelog.name, records, partitions)
            if delivery is None:
                worker._hold_for_good(held)
                return
            for p, s in stores.items():
                s.applied(counts[p])
            worker.tables.sent(delivery)
            worker._hold(cast("Awaitable[Delivery]", delivery), held)
        for h, _, _ in stretches:
            h.folding = False
        for event in dropped:
            event._ack()
        self._out = out
