"""`Stream.distinct`: drop an element whose key (or a field) was already seen within a time
span of event time, on its partition.

A stateful operation with a table of its own, `<agent>-distinct-<n>` (changelog
`<app>-<agent>-distinct-<n>-changelog`, created when the agent is built): per partition, the
event time of the last element let through for each key (or field value). An element passes
when none is stored, or the stored one is `within` ms or more away from its own; it is then
stored. Entries expire when stream time (the largest event time seen, kept in the skip map as
for windows) reaches their time + `within`: a tombstone, so the store stays bounded. Exact
across crashes by the tables' changelog, positions and skip rule: a replayed element changes
nothing, and is passed on again only if it is the one stored (at-least-once downstream).
"""

from __future__ import annotations

import heapq
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

import msgspec

from ..stream import EMPTY, Element, Event, Pulled, Stream
from ..transport import Delivery, Headers
from .changelog import POSITION_HEADER, map_record
from .windows import _NO_TIME, STREAM_TIME, _position, _ready, _timestamp_field, event_time_of

if TYPE_CHECKING:
    from .store import Store
    from .table import TablePartitions

__all__ = ["Distinct"]

_RUN_MAX = 1000


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
                value_type=int,
                state_type=int,
                partitions=max(t.partitions for t in inputs),
            )
        table.ensure = True  # declared after the worker created its topics
        self._table = table
        self._within = within
        self._field = field
        self._event_time = event_time_of(_timestamp_field(up))
        self._live: TablePartitions = worker.tables.attach(table, [t.name for t in inputs])
        self._heaps: dict[int, tuple[Store, list[tuple[int, bytes]]]] = {}
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

    def _heap(self, q: int, store: Store) -> list[tuple[int, bytes]]:
        held = self._heaps.get(q)
        if held is None or held[0] is not store:
            heap = [(seen + self._within, raw) for raw, seen in store.items()]
            heapq.heapify(heap)
            held = self._heaps[q] = (store, heap)
        return held[1]

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
        last_offsets: Any = None
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
            if event._offsets is not last_offsets or last_offsets.closed:
                if event._offsets.closed:
                    continue
                h = live.store(m.partition)
                if h is None:
                    continue
                if not h.ready.is_set():
                    await _ready(h)
                    if live.store(m.partition) is not h:
                        continue
                store, q, last_offsets = h.store, m.partition, event._offsets
                heap = self._heap(q, store)
            try:
                t = self._event_time(value, event)
                raw = m.key if field is None else msgspec.json.encode(field(value))
            except Exception as exc:
                await worker.dead_letter(carrier, exc, self._agent)
                continue
            if raw is None:
                out.append((value, carrier))  # no key: nothing to compare it with
                continue
            mark, src, offset = _position(m)
            positions = store.positions
            seen = store.get(raw)
            if offset <= positions.get(src, -1):
                # A replay: applied already; passed on again if it is the one let through.
                if seen == t:
                    out.append((value, carrier))
                else:
                    dropped.append(event)
            elif seen is not None and abs(t - seen) < within:
                dropped.append(event)
            else:
                data = encode(t)
                store.put(raw, t, data)
                heapq.heappush(heap, (t + within, raw))
                records.append((raw, data, ((POSITION_HEADER, mark),)))
                partitions.append(q)
                stores[q] = store
                positions[src] = offset
                if not event._acked:
                    held.append((event._offsets, m.offset))
                out.append((value, carrier))
            if t > positions.get(STREAM_TIME, _NO_TIME):
                positions[STREAM_TIME] = t
                while heap and heap[0][0] <= t:
                    expires, key = heapq.heappop(heap)
                    if store.get(key) == expires - within:
                        store.delete(key)
                        records.append((key, None, ()))
                        partitions.append(q)
                        stores[q] = store
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
        for event in dropped:
            event._ack()
        self._out = out
