"""The run and closing machinery shared by the operators that close state entries (windowed
aggregation, stream-stream joins): a run's changelog records and outputs (`_Run`), the
carriers that hold an element's message until its rows are delivered (`_Rows`), the closed
entries whose tombstones wait for those rows (`_Outputs`, `_Closing`), writing a run
(`send_run`), and the positions of an element's second and later outputs (`_fanned`)."""

from __future__ import annotations

import itertools
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

import msgspec

from ..events import _UNDECODED, Element, Event
from ..source import SourceStream
from ..transport import Delivery, Headers
from .aggregate import _without_closed
from .changelog import POSITION_HEADER, map_record, source_partition, unreadable_position

if TYPE_CHECKING:
    from ..offsets import PartitionOffsets
    from .table import _Held

__all__ = ["send_run"]


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
        origin: str = "",
    ) -> None:
        """An output row, carried by its own event: it holds the source message of the
        element that produced it (`event`) until downstream is done with it. An element's
        second and later outputs carry positions of their own (`_fanned`), and so does each
        output of no element (`q`: the store partition it comes from). `key`: the row's key
        decoded, its event's `key` (else the raw bytes).

        `closing`: the row of an entry the element closed, when the element has outputs of
        another kind too (a join's pairs). Those are numbered apart, the k-th (from 0) under
        `#ck`: a replay closes again a first part of what the element closed (the tombstones
        written are the last closed), whatever it emits again of its other outputs (its pairs
        go again only while the element's own entry and its partners are stored), so one
        counter for both would give a row closed again another number than it had.

        `origin`: appended to the element's source in every output's position (its first
        output's too), for elements whose source another input of the step shares: a stream
        join's other topic (`#joined`), which may be the stream's own topic, where an output
        of each side for one offset would share a position and a stateful step further on
        would take the second for a replay."""
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
            headers = _fanned(m, f"c{self.shut}", origin)
            self.shut += 1
        else:
            fan = self.fan
            if fan or origin:
                headers = _fanned(m, fan, origin)
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


def _fanned(m: Any, k: int | str, origin: str = "") -> Headers:
    """The headers of the k-th (k >= 1) output of the element of message `m` (or its k-th
    closing one, k `c0`, `c1`, ...: `_Run.emit`): a position of its own, under the source
    `<source>#k`. A stateful step further on skips a position at or below the highest it
    applied of that source, so outputs sharing their element's position would all count as
    replays of the first. The k-th outputs of a source partition's elements arrive in order,
    like the elements, so the skip rule holds. `origin` (`_Run.emit`) follows the source,
    and with it k 0 (the first output) adds no `#0`."""
    _, src, offset = _position(m)
    mark = (f"{src}{origin}#{k}:{offset}" if k != 0 else f"{src}{origin}:{offset}").encode()
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
