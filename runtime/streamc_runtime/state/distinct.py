"""`Stream.distinct`: drop an element whose key (or a field) was already seen within a time
span of event time, on its partition.

A stateful operation with a table of its own, `<agent>-distinct-<n>` (changelog
`<app>-<agent>-distinct-<n>-changelog`, created when the agent is built): per partition, the
event time of the last element let through for each key (or field value). An element passes
when none is stored, or the stored one is `within` ms or more away from its own; it is then
stored. Entries expire when stream time (the largest event time seen, kept in the skip map as
for windows) reaches their time + `within`: from then on they no longer count, and a tombstone
(when stream time next rises) keeps the store bounded. Exact
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
from .aggregate import _NO_HELD, _without_closed, held_store
from .changelog import POSITION_HEADER, map_record
from .windows import _NO_TIME, STREAM_TIME, _position, _timestamp_field, event_time_of

if TYPE_CHECKING:
    from .table import TablePartitions, _Held

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
        # Per holding, not per store: a memory store assigned back is the same object, with
        # the entries others wrote meanwhile restored into it.
        self._heaps: dict[int, tuple[_Held, list[tuple[int, bytes]]]] = {}
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

    def _heap(self, q: int, held: _Held) -> list[tuple[int, bytes]]:
        known = self._heaps.get(q)
        if known is None or known[0] is not held:
            heap = [(seen + self._within, raw) for raw, seen in held.store.items()]
            heapq.heapify(heap)
            known = self._heaps[q] = (held, heap)
        return known[1]

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
                heap = self._heap(q, h)
                stretches.append((h, len(records), len(out)))
                h.folding = True  # a store revoked now holds entries its changelog may not
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
                mark, src, offset = _position(m)
            except ValueError as exc:  # a position header streamc did not write
                await worker.dead_letter(carrier, exc, self._agent)
                continue
            positions = store.positions
            seen = store.get(raw)
            if offset <= positions.get(src, -1):
                # A replay: applied already; passed on again if it is the one let through.
                if seen == t:
                    out.append((value, carrier))
                else:
                    dropped.append(event)
            elif (
                seen is not None
                and abs(t - seen) < within
                and seen + within > positions.get(STREAM_TIME, _NO_TIME)
            ):
                # Only an entry stream time has not expired counts: its tombstone waits for
                # stream time to rise, which a replay after a crash makes it do sooner.
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
