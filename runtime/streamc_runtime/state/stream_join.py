"""`Stream.join_stream`: a windowed join of the stream with another topic, by key.

Each element `a` of the stream and each record `b` of the other topic with the same key and
event times at most `within` ms apart make one pair `(a, b)`, emitted when the second of the
two arrives (its key is the key, its timestamp the later of the two). Both sides are buffered
per partition (the two topics are co-partitioned: partition q of either is joined in store
q) in a table of the join's own, `<agent>-join-<n>` (changelog
`<app>-<agent>-join-<n>-changelog`): one entry per element, under its side, an arrival number
and its key, holding its event time, its encoded value, whether it found a partner and how
many pairs it made on arrival.

Stream time per partition is the largest event time seen on either side, kept in the skip map
as for windows. An element's window closes when stream time passes its time + within + grace:
its entry leaves the index (its tombstone waits, see below), and a left join emits an
element of the stream that found no partner as `(a, None)`, an outer join likewise a record
of the other topic as `(None, b)`, once without a crash. An element more than `grace` behind
stream time is late (no partner that is not late could be within of it once its own entry
would close): it is never buffered and goes to the `late` topic or the dead-letter topic
(`streamc.error.type: late`).

Exactness: the buffers follow the tables' skip rule, so after a crash every element is
buffered once and a partner found is marked once. A replayed element (its offset applied
already) is not buffered again; it emits again the pairs it made on first arrival, since what
it emitted then may not have been delivered (the output is at-least-once, like every
table's), with the numbers they had, if all its partners (those that arrived before it, by
arrival number) are still stored; if one is not, none: that partner's tombstone waited for
their delivery (`_pair_again`).
It also closes again every stored entry its event time reaches. A closed entry's tombstone
waits until every row emitted before it is delivered (`closing._Outputs`), and the element
that closed it stays uncommitted until then: so a crash leaves the entry in the changelog,
and its pairs and unmatched row come out again, with the positions they had: an element's
unmatched rows are numbered apart from its pairs (`_Run.emit`'s `closing`), since its replay
repeats the pairs only while its own entry and its partners are stored, which later closes
may have ended.
"""

from __future__ import annotations

import asyncio
import heapq
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

import msgspec

from ..events import EMPTY, Element, Event, Pulled
from ..records import Time, value_codec
from ..source import SourceStream
from ..stream import Stream
from ..transport import TP
from .aggregate import _NO_HELD, held_store
from .closing import _Closing, _position, _Run, send_run
from .event_time import _NO_TIME, STREAM_TIME, LateError, _timestamp_field, event_time_of

if TYPE_CHECKING:
    from ..topic import Topic
    from .table import TablePartitions, _Held

__all__ = ["Buffered", "StreamStreamJoin"]

# The skip map entry holding the partition's last arrival number (not "<topic>:<partition>").
ARRIVALS = "streamc.join_arrivals"
_RUN_MAX = 1000
# Seconds the other topic's records wait at most for the stream's partition to catch up
# (when the transport cannot tell, or never says so), before they are joined alone.
_STALE = 5.0
_THIS, _OTHER = b"L", b"R"
_OTHER_SOURCE = "#joined"
HOWS = ("inner", "left", "outer")


class Buffered(msgspec.Struct, array_like=True):
    """An element waiting for partners: its event time, whether it found one, its position
    (`<topic>:<partition>:<offset>`, to find it again on replay), its encoded value and how
    many pairs it made on arrival (-1: not known, an entry written before they were
    counted; a trailing field, so either version reads the other's entries)."""

    ts: int
    matched: bool
    mark: bytes
    value: bytes
    pairs: int = -1


def entry_key(side: bytes, arrival: int, raw_key: bytes) -> bytes:
    return side + arrival.to_bytes(8, "big") + raw_key


def split_entry(raw: bytes) -> tuple[bytes, int, bytes]:
    return raw[:1], int.from_bytes(raw[1:9], "big"), raw[9:]


class _Buffers:
    """The entries of one store partition: per (side, key) the entries in arrival order, by
    close time (a heap), and by position. Built per holding, as the windows' index."""

    __slots__ = ("by_key", "by_mark", "heap", "held")

    def __init__(self, held: _Held, reach: int) -> None:
        self.held = held
        self.by_key: dict[tuple[bytes, bytes], list[bytes]] = {}
        self.by_mark: dict[bytes, bytes] = {}
        self.heap: list[tuple[int, bytes]] = []
        store = held.store
        entries = sorted(store.items())
        last = 0
        for raw, b in entries:
            side, arrival, key = split_entry(raw)
            self.add(raw, side, key, b, reach)
            last = max(last, arrival)
        # The map may lag the data records after it: arrival numbers never go back.
        if last > store.positions.get(ARRIVALS, 0):
            store.positions[ARRIVALS] = last

    def add(self, raw: bytes, side: bytes, key: bytes, b: Buffered, reach: int) -> None:
        self.by_key.setdefault((side, key), []).append(raw)
        self.by_mark[b.mark] = raw
        heapq.heappush(self.heap, (b.ts + reach, raw))

    def forget(self, raw: bytes, b: Buffered) -> None:
        side, _, key = split_entry(raw)
        entries = self.by_key.get((side, key))
        if entries is not None:
            entries.remove(raw)
            if not entries:
                del self.by_key[(side, key)]
        if self.by_mark.get(b.mark) == raw:
            del self.by_mark[b.mark]


def _stamp(element: Element) -> int:
    carrier = element[1]
    return carrier.message.timestamp if type(carrier) is Event else 0


def _partition(element: Element) -> int:
    carrier = element[1]
    return carrier.message.partition if type(carrier) is Event else -1


class _OtherSide(SourceStream[Any]):
    """The other topic's buffer: data arriving there wakes the agent waiting on its own."""

    def __init__(self, worker: Any, topic: Topic[Any], agent: str, main: SourceStream[Any]):
        super().__init__(worker, (topic,), agent)
        self.main = main

    def wake(self) -> None:
        super().wake()
        self.main.wake()


class StreamStreamJoin(Stream[Any]):
    """`join_stream` (see the module docstring)."""

    _op = "join_stream"
    _changes_values = True

    def __init__(
        self,
        up: Stream[Any],
        other: Topic[Any],
        within: int,
        grace: int,
        how: str,
        value_type: Any,
        late: Topic[Any] | None,
    ) -> None:
        super().__init__(up._worker, up, up._source)
        if not isinstance(within, int) or within < 0:
            raise ValueError(f"join_stream: within must be >= 0 milliseconds, got {within!r}")
        if not isinstance(grace, int) or grace < 0:
            raise ValueError(f"join_stream: grace must be >= 0 milliseconds, got {grace!r}")
        if how not in HOWS:
            raise ValueError(f"join_stream: how must be one of {HOWS}, got {how!r}")
        worker = self._worker
        inputs = up._source.topics
        for topic in inputs:
            if topic.partitions != other.partitions:
                raise ValueError(
                    f"join_stream: topic {topic.name!r} has {topic.partitions} partitions but "
                    f"{other.name!r} has {other.partitions}: a stream join needs co-partitioned "
                    "topics"
                )
        counts = worker.stream_join_counts
        n = counts[self._agent] = counts.get(self._agent, 0) + 1
        name = f"{self._agent}-join-{n}"
        table = worker.app.tables.get(name)
        if table is None:
            table = worker.app.table(
                name,
                key_type=bytes,
                value_type=Buffered,
                state_type=Buffered,
                partitions=other.partitions,
            )
        table.ensure = True  # declared after the worker created its topics
        self._table = table
        self._within = within
        self._grace = grace
        # An entry closes once stream time passes its time + within + grace: a partner not
        # late (at most grace behind stream time) can no longer be within of it.
        self._reach = within + grace
        self._how = how
        self._late = late
        if value_type is None:
            value_type = inputs[0].value_type
        this_codec = value_codec(value_type)
        self._codecs = {_THIS: this_codec, _OTHER: other.value_codec}
        # Appended to the source of the outputs' positions (`_Run.emit`): the two sides may
        # share a source (a self-join), and each side's outputs are numbered on their own.
        self._origins = {_THIS: "", _OTHER: _OTHER_SOURCE}
        # Which side's unmatched entries are emitted at close.
        self._unmatched = {_THIS: how != "inner", _OTHER: how == "outer"}
        self._this_time = event_time_of(_timestamp_field(up))
        self._other_time = event_time_of(getattr(other, "timestamp_field", None))
        self._other = _OtherSide(worker, other, self._agent, up._source)
        worker.conductor.add(self._other)
        self._live: TablePartitions = worker.tables.attach(
            table, [t.name for t in (*inputs, other)]
        )
        self._buffers: dict[int, _Buffers] = {}
        self._out: list[Element] = []
        self._at = 0
        self._closings = _Closing(up._source)
        # The stream's element pulled and not handled yet, and the other topic's records
        # pulled, per partition (`_next`).
        self._ahead: Element | None = None
        self._stash: dict[int, deque[tuple[Element, float]]] = {}  # (element, since)
        self._stashed = 0
        self._stash_max = worker.buffer_size
        self._drained = worker.drain_epoch  # the worker's drain last seen with nothing held
        self._loop = asyncio.get_running_loop()
        self._highwater: Callable[[TP], int | None] | None = getattr(
            worker.transport, "highwater", None
        )
        # The worker's `close_windows_epoch` last acted on (`streamc run`'s end of input).
        self.closed_epoch = worker.close_windows_epoch
        worker.windowed.append(self)

    async def _pull(self) -> Pulled:
        if self._at >= len(self._out):
            self._out, self._at = [], 0
            await self._run()
            if not self._out:
                return EMPTY
        element = self._out[self._at]
        self._at += 1
        return element

    def _deadline(self) -> float | None:
        if self._other.buffer or self._ahead is not None or self._closings.due():
            return 0.0  # pull again at once
        up = self._up
        assert up is not None
        deadline = up._deadline()
        if self._stashed:
            # When the oldest record held for the stream may go alone.
            due = min(w[0][1] for w in self._stash.values() if w) + _STALE
            deadline = due if deadline is None else min(deadline, due)
        return deadline

    def _buffers_of(self, q: int, held: _Held) -> _Buffers:
        known = self._buffers.get(q)
        if known is None or known.held is not held:
            known = self._buffers[q] = _Buffers(held, self._reach)
        return known

    async def _next(self) -> tuple[bytes, Element] | None:
        """The next element of either side. Stream time is per partition, so the sides are
        merged per partition by timestamp as far as what has arrived shows: the other
        topic's records wait in per-partition queues (as many as an agent buffers), and one
        goes first when it is older than the stream's next element of its partition. While
        the stream has nothing, they wait for it while the stream's topics have messages of
        that partition not yet handed out (as Kafka Streams does), at most `_STALE`
        seconds, or until the queues are full or the worker drains (`streamc run` when
        nothing else moves)."""
        up, other, stash = self._up, self._other, self._stash
        assert up is not None
        while self._stashed < self._stash_max:
            element = await other._pull()
            if element is EMPTY:
                break
            pulled = cast(Element, element)
            stash.setdefault(_partition(pulled), deque()).append((pulled, self._loop.time()))
            self._stashed += 1
        this = self._ahead
        if this is None:
            element = await up._pull()
            if element is not EMPTY:
                this = cast(Element, element)
        if this is not None:
            waiting = stash.get(_partition(this))
            if waiting and _stamp(waiting[0][0]) < _stamp(this):
                self._ahead = this
                return _OTHER, self._unstash(waiting)
            self._ahead = None
            return _THIS, this
        if not self._stashed:
            self._drained = self._worker.drain_epoch
            return None
        for waiting in stash.values():
            # Records of a partition revoked while they waited: its new owner joins them.
            while waiting and cast(Event[Any, Any], waiting[0][0][1])._offsets.closed:
                self._unstash(waiting)
        heads = [q for q in stash if stash[q]]
        if not heads:
            return None
        if self._stashed < self._stash_max and self._worker.drain_epoch == self._drained:
            stale = self._loop.time() - _STALE
            heads = [q for q in heads if stash[q][0][1] <= stale or self._caught_up(q)]
            if not heads:
                return None  # `_deadline` says when the oldest goes anyway
        oldest = min(heads, key=lambda q: _stamp(stash[q][0][0]))
        return _OTHER, self._unstash(stash[oldest])

    def _caught_up(self, q: int) -> bool:
        """Whether every message of partition q of the stream's topics that the broker holds
        (as its last fetch response said) was handed to the agents: nothing of the stream is
        on its way for q, so the other topic's records need not wait for it. (Messages still
        to be forwarded into a repartition topic the stream reads are not seen.)"""
        up = self._up
        assert up is not None
        highwater, offsets = self._highwater, self._worker.offsets.partitions
        if highwater is None:
            return True  # a transport that cannot tell: the wait alone decides
        for topic in up._source.topics:
            tp = TP(topic.name, q)
            end = highwater(tp)
            state = offsets.get(tp)
            position = None if state is None else state.position
            if end is None or end > (0 if position is None else position):
                return False
        return True

    def _unstash(self, waiting: deque[tuple[Element, float]]) -> Element:
        self._stashed -= 1
        return waiting.popleft()[0]

    async def _run(self) -> None:
        up = self._up
        assert up is not None
        worker, live = self._worker, self._live
        encode = self._table.state_codec.encode
        within, reach, grace, codecs = self._within, self._reach, self._grace, self._codecs
        run = _Run(self._closings)
        flushed = self._closings.flush(run)
        last_offsets: Any = None
        last_held: Any = _NO_HELD
        store: Any = None
        buffers: _Buffers | None = None
        q = -1
        while len(run.out) < _RUN_MAX:
            if run.out and up._may_wait():
                break
            pulled = await self._next()
            if pulled is None:
                if len(run.records) == flushed and not run.out:
                    self._close_all(run)
                break
            side, (value, carrier) = pulled
            if type(carrier) is not Event:
                await worker.dead_letter(
                    carrier,
                    TypeError("join_stream takes single elements, not batches"),
                    self._agent,
                )
                continue
            event = carrier
            m = event.message
            if event._offsets is not last_offsets or last_offsets.closed or last_held.closed:
                h = await held_store(live, event)
                if h is None:
                    continue  # revoked: the partition's new owner handles it
                store, q, last_offsets, last_held = h.store, m.partition, event._offsets, h
                buffers = self._buffers_of(q, h)
                run.stretch(h)
            assert buffers is not None
            raw_key = m.key
            if raw_key is None:
                await worker.dead_letter(
                    carrier,
                    ValueError("join_stream needs a key; this element has none"),
                    self._agent,
                )
                continue
            try:
                t = (self._this_time if side is _THIS else self._other_time)(value, event)
                data = cast(bytes, codecs[side].encode(value))  # a record: never None
                mark, src, offset = _position(m)
            except Exception as exc:
                await worker.dead_letter(carrier, exc, self._agent)
                continue
            if side is _OTHER:
                # The other topic's positions apart from the stream's: the two sides may
                # come from one source (a self-join, or the topic the stream was re-keyed from).
                src = src + _OTHER_SOURCE
                mark = f"{src}:{offset}".encode()
            positions = store.positions
            now = positions.get(STREAM_TIME, _NO_TIME)
            partner_side = _OTHER if side is _THIS else _THIS
            partners = buffers.by_key.get((partner_side, raw_key), ())
            if offset <= positions.get(src, -1):
                # A replay: buffered already; its stream time counts.
                own = buffers.by_mark.get(mark)
                if own is not None:
                    self._pair_again(run, event, side, value, raw_key, t, buffers, own, partners)
                self._advance(run, store, buffers, q, t, now, event, side)
                run.done(event)
                continue
            if t + grace < now:
                await self._too_late(event, side, value, t, now)
                continue
            paired = 0
            for raw in partners:
                b = store.get(raw)
                if b is None or abs(b.ts - t) > within:
                    continue
                paired += 1
                self._pair(run, event, side, value, b, raw_key, max(t, b.ts))
                if not b.matched and self._unmatched[partner_side]:
                    b = Buffered(b.ts, True, b.mark, b.value, b.pairs)
                    encoded = encode(b)
                    store.put(raw, b, encoded)
                    # No position: only the element's own entry, written after these, says it
                    # was applied. A crash that keeps these and loses that entry has it
                    # applied again: its partners are marked already, their pairs go again.
                    run.record(q, store, raw, encoded, None)
            arrival = positions.get(ARRIVALS, 0) + 1
            positions[ARRIVALS] = arrival
            own_raw = entry_key(side, arrival, raw_key)
            entry = Buffered(t, paired > 0, mark, data, paired)
            encoded = encode(entry)
            store.put(own_raw, entry, encoded)
            buffers.add(own_raw, side, raw_key, entry, reach)
            run.record(q, store, own_raw, encoded, mark)
            positions[src] = offset
            self._advance(run, store, buffers, q, t, now, event, side)
            run.hold(event)
        await self._send(run)

    def _pair_again(
        self,
        run: _Run,
        event: Event[Any, Any],
        side: bytes,
        value: Any,
        raw_key: bytes,
        t: int,
        buffers: _Buffers,
        own: bytes,
        partners: Sequence[bytes],
    ) -> None:
        """A replayed element's pairs: those it made on arrival go out again, with the
        output numbers they had, if every partner is still stored; if one is not, none.

        The partners still stored that arrived before it are its partners on arrival (one
        closed before it arrived is more than `within` + `grace` behind stream time then,
        and so is the element: it would have been late, never buffered). A partner is gone
        from the store only once its close's tombstone was written (or its removal done),
        which waits until every row emitted before the close is done downstream
        (`closing._Outputs`): the element's pairs among them, since it paired with the
        partner before the partner closed. So if one partner is missing, every pair was
        delivered; renumbering the rest would give a row emitted again another position than
        it had, since the tombstones written need not be of the first or last partners. A
        crash part-way through the element's own run keeps a prefix of its changelog
        records, its entry last: if the entry is stored, so are its partners (their
        tombstones would come after it), and if not, the element is no replay. Pairs with
        partners that arrived after it were those partners' outputs: their replays make
        them again. Not covered: a replay that hands the elements out in another order than
        the first run (`_next` merges the sides by what has arrived) can close a partner and
        write its tombstone before the element's replay; then its pairs are not made again."""
        store = buffers.held.store
        entry = store.get(own)
        arrival = split_entry(own)[1]
        within = self._within
        found: list[tuple[int, Buffered]] = []
        for raw in partners:
            a = split_entry(raw)[1]
            if a > arrival:
                break
            b = store.get(raw)
            if b is not None and abs(b.ts - t) <= within:
                found.append((a, b))
        if entry is not None and 0 <= entry.pairs != len(found):
            # Not all in the index: those closed since the restore, whose removal waits,
            # count (another interleaving of the sides on replay can close one first).
            found += self._closed_partners(run, buffers, side, raw_key, arrival, t)
            if len(found) != entry.pairs:
                return
            found.sort(key=lambda f: f[0])
        for _, b in found:
            self._pair(run, event, side, value, b, raw_key, max(t, b.ts))

    def _closed_partners(
        self, run: _Run, buffers: _Buffers, side: bytes, raw_key: bytes, arrival: int, t: int
    ) -> list[tuple[int, Buffered]]:
        """The entries of the other side of key `raw_key` that arrived before `arrival`, are
        within of `t`, and were closed but are still stored (their removal waits in
        `_Closing`)."""
        held, store = buffers.held, buffers.held.store
        partner_side = _OTHER if side is _THIS else _THIS
        found: list[tuple[int, Buffered]] = []
        for outputs in (*self._closings.queue, run.outputs):
            for h, _, raw in outputs.closes:
                s, a, key = split_entry(raw)
                if h is not held or s != partner_side or key != raw_key or a > arrival:
                    continue
                b = store.get(raw)
                if b is not None and abs(b.ts - t) <= self._within:
                    found.append((a, b))
        return found

    def _pair(
        self,
        run: _Run,
        event: Event[Any, Any] | None,
        side: bytes,
        value: Any,
        partner: Buffered,
        raw_key: bytes,
        ts: int,
    ) -> None:
        if side is _THIS:
            pair = (value, self._codecs[_OTHER].decode(partner.value))
        else:
            pair = (self._codecs[_THIS].decode(partner.value), value)
        run.emit(event, pair, raw_key, ts, origin=self._origins[side])

    def _advance(
        self,
        run: _Run,
        store: Any,
        buffers: _Buffers,
        q: int,
        t: int,
        now: int,
        event: Event[Any, Any] | None,
        side: bytes,
    ) -> None:
        if t > now:
            store.positions[STREAM_TIME] = t
        heap = buffers.heap
        if heap and heap[0][0] < t:
            # Not only when t moves stream time: a replay closes again what its element
            # closed, and entries whose close is not in the changelog are stored after a crash.
            self._close(run, store, buffers, q, t, event, self._origins[side])

    def _close(
        self,
        run: _Run,
        store: Any,
        buffers: _Buffers,
        q: int,
        clock: int,
        event: Event[Any, Any] | None,
        origin: str = "",
    ) -> None:
        """Close every entry whose time + within + grace < `clock`, in close order: an
        unmatched entry of a side that asks for it goes downstream; the tombstone waits
        until every row emitted so far is delivered (`closing._Outputs`), a pair with the
        entry among them."""
        heap = buffers.heap
        while heap and heap[0][0] < clock:
            _, raw = heapq.heappop(heap)
            b = store.get(raw)
            if b is None:
                continue
            side, _, key = split_entry(raw)
            buffers.forget(raw, b)
            run.close(event, buffers.held, q, raw)
            if not b.matched and self._unmatched[side]:
                value = self._codecs[side].decode(b.value)
                pair = (value, None) if side is _THIS else (None, value)
                run.emit(event, pair, key, b.ts, q, closing=True, origin=origin)

    def _close_all(self, run: _Run) -> None:
        """At the end of `streamc run`'s input: stream time moves past every entry."""
        epoch = self._worker.close_windows_epoch
        if epoch == self.closed_epoch:
            return
        self.closed_epoch = epoch
        for q, h in list(self._live.held.items()):
            if not h.ready.is_set():
                continue
            buffers = self._buffers_of(q, h)
            if not buffers.heap:
                continue
            run.stretch(h)
            clock = max(c for c, _ in buffers.heap) + 1
            store = h.store
            store.positions[STREAM_TIME] = max(store.positions.get(STREAM_TIME, _NO_TIME), clock)
            self._close(run, store, buffers, q, clock, None)

    async def _too_late(
        self, event: Event[Any, Any], side: bytes, value: Any, t: int, now: int
    ) -> None:
        """The `late` topic takes the stream's own elements (of its type, from whichever
        merged topic); the other topic's late records are dead-lettered."""
        worker = self._worker
        if self._late is None or side is not _THIS:
            exc = LateError(
                f"event time {Time.from_ms(t).rfc3339()} is past the join window and its "
                f"grace (stream time {Time.from_ms(now).rfc3339()})"
            )
            await worker.dead_letter(event, exc, self._agent)
            return
        await worker.forward(self._late, value, event)
        event._ack()

    async def _send(self, run: _Run) -> None:
        if await send_run(self._worker, self._table.changelog.name, run):
            self._out = run.out
