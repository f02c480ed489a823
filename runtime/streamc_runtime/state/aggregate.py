"""`Stream.aggregate`: fold each element into its key's state in a table, pass the row on.

The node folds runs: whatever upstream has at hand (up to `_RUN_MAX` elements; taken from the
buffer at once when upstream hands over its events as they are) is folded, element by element
in order, then the run's changelog records go out in one `send_many` (one per applied input,
in apply order, never reordered or merged: a partially delivered run must be a prefix),
followed by the skip map of each table partition the run touched. Then the elements go
downstream one by one, as `(row(key, state), carrier)`. A carrier stays in flight
until its changelog record is delivered, as a forward's does, and until downstream is done.

The skip rule: an element whose source position (header `streamc.position`, else its own
message's) is at or below what the store has applied for that source partition is a replay
(a repartition duplicate, or input read again after a restart): it is not folded again, but
the key's current row still goes downstream, so the last row published per key is right even
after a crash between the changelog write and the publish.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

from ..events import _UNDECODED, EMPTY, Carrier, Chunk, Element, Event, Pulled, _Member, ack_carrier
from ..source import _next_source_value
from ..stream import Stream
from ..transport import Delivery, Headers
from .changelog import POSITION_HEADER, map_record, source_partition, unreadable_position

if TYPE_CHECKING:
    from .table import Table, TablePartitions, _Held

__all__ = ["Aggregate"]

_RUN_MAX = 1000
_KEYS_MAX = 100_000  # decoded keys cached, at most (the cache starts afresh beyond)


class Aggregate(Stream[Any]):
    _op = "aggregate"
    _changes_values = True

    def __init__(
        self,
        up: Stream[Any],
        table: Table[Any, Any],
        fold: Callable[[Any, Any], Any],
        row: Callable[[Any, Any], Any],
        checks: Sequence[tuple[str, Callable[[Any], Any]]] = (),
    ) -> None:
        super().__init__(up._worker, up, up._source)
        self._checks = tuple(checks)  # (state attribute, its reduce hook's result check)
        self._table = table
        self._fold = fold
        self._row = row
        self._fold_async = _is_async(fold)
        if table.row is None:
            table.row = row
        self._live: TablePartitions = self._worker.tables.attach(
            table, [t.name for t in up._source.topics]
        )
        # The folded run (its changelog records sent): rows and their carriers, handed on from
        # `_next`. Two lists rather than (row, carrier) tuples: a tuple per element outlived
        # young collections and made the cycle collector's full passes more frequent.
        self._rows: list[Any] = []
        self._carriers: list[Carrier] = []
        self._next = 0
        # Whether upstream's elements are its buffer's events as they are (the source, or the
        # read-back side of a `group_by`): then runs are taken from the buffer directly.
        self._direct = hands_over_events(up)
        # Source partitions as the skip map names them, by their bytes in position headers.
        self._names: dict[bytes, str] = {}
        # Decoded keys by their bytes (a row needs the key; most keys come back often).
        self._keys: dict[bytes, Any] = {}

    def _read_in_runs(self) -> None:
        if self._direct:
            # Only the fused loop below takes this node's carriers, and it acks a chunk's
            # members together: the source can hold `Chunk`s (see `take_run`).
            self._source.chunk()

    async def _pull(self) -> Pulled:
        i = self._next
        if i >= len(self._rows):
            await self._fold_run()
            i = self._next
            if i >= len(self._rows):
                return EMPTY
        self._next = i + 1
        return (self._rows[i], self._carriers[i])

    async def _pull_many(self, most: int) -> tuple[list[Any], list[Carrier]]:
        # The folded run's rows at once (a `runs()` loop downstream), no `_pull` each.
        i = self._next
        if i >= len(self._rows):
            await self._fold_run()
            i = self._next
        j = min(len(self._rows), i + most)
        self._next = j
        if i == 0 and j == len(self._rows):
            return self._rows, self._carriers
        return self._rows[i:j], self._carriers[i:j]

    async def __anext__(self) -> Any:
        # `Stream.__anext__` with the pull inlined: an agent iterating the aggregate directly
        # (`| aggregate ... | sink h`) takes folded elements with no `_pull` coroutine each.
        current = self._current
        if current is not None:
            self._current = None
            if type(current) is Event:  # `current._ack()`, inlined
                if not current._acked:
                    current._acked = True
                    current._offsets.release(current.message.offset)
            else:
                ack_carrier(current)
        i = self._next
        while i >= len(self._rows):
            await self._fold_run()
            i = self._next
            if i < len(self._rows):
                break
            source = self._source
            if source.closed:
                raise StopAsyncIteration
            await source.wait(self._deadline())
        self._next = i + 1
        self._current = self._carriers[i]
        return self._rows[i]

    async def _fold_run(self) -> None:
        up = self._up
        assert up is not None
        values, carriers = await take_run(up, self._direct)
        if not values:
            return
        worker = self._worker
        table, live = self._table, self._live
        helds = live.held
        fold, row, fold_async, checks = self._fold, self._row, self._fold_async, self._checks
        state_type = table.state_type
        encode = table.state_codec.encode
        names, keys = self._names, self._keys
        if len(keys) > _KEYS_MAX:
            keys.clear()
        records: list[tuple[bytes | None, bytes | None, Headers]] = []
        partitions: list[int] = []
        stores: dict[int, Any] = {}  # table partition -> its store, for those this run touched
        rows: list[Any] = []
        out: list[Carrier] = []
        held: list[Any] = []
        store: Any = None
        get: Any = None
        put: Any = None
        positions: dict[str, int] = {}
        own_src = ""
        own_prefix = b""
        last_q = -1
        last_offsets: Any = None
        last_held: Any = _NO_HELD
        last_chunk: Chunk | None = None
        # (store held, first record, first output) of each stretch of one partition's elements
        stretches: list[tuple[_Held, int, int]] = []
        # A run is taken whole before it is folded: its folds share the loop as an agent does
        # between elements (`SourceStream.share_loop`), or slow hooks would hold it for a
        # whole run. Counted down here, and handed back to the source after the run.
        source = self._source
        until_check = source.until_check
        for value, carrier in zip(values, carriers, strict=True):
            until_check -= 1
            if not until_check:
                await source.share_loop()
                until_check = source.until_check
            # Identity checks first: a call of isinstance per element costs more than both.
            kind = type(carrier)
            if kind is not _Member and kind is not Event and not isinstance(carrier, Event):
                await worker.dead_letter(
                    carrier, TypeError("aggregate takes single elements, not batches"), self._agent
                )
                continue
            event: Event[Any, Any] = carrier  # type: ignore[assignment]
            m = event.message
            offsets = event._offsets
            if offsets is not last_offsets or offsets.closed or last_held.closed:
                # Another source partition (or its store revoked): find its table partition's
                # store, restored; at once when it is ready, as it nearly always is.
                h = helds.get(m.partition)
                if h is None or offsets.closed or not h.ready.is_set():
                    h = await held_store(live, event)
                    if h is None:
                        continue  # revoked: the partition's new owner handles it
                store, last_q, last_offsets, last_held = h.store, m.partition, offsets, h
                get, put, positions = store.get, store.put, store.positions
                own_src = f"{m.topic}:{m.partition}"
                own_prefix = f"{own_src}:".encode()
                stores[last_q] = store
                stretches.append((h, len(records), len(rows)))
                h.folding = True  # a store revoked now holds states its changelog may not
            raw_key: bytes | None = m.key
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
            key = event._key
            if key is _UNDECODED:
                key = keys.get(raw_key, _UNDECODED)
                if key is _UNDECODED:
                    key = keys[raw_key] = event.key
                else:
                    event._key = key
            state = get(raw_key)
            try:
                if offset <= positions.get(src, -1):
                    # A replay: applied already. Its key's current row goes on all the same.
                    rows.append(row(key, state if state is not None else state_type()))
                    out.append(carrier)
                    continue
                # A copy, so a fold that raises half way leaves the stored state as it was.
                state = state_type() if state is None else state.__copy__()
                state = fold(state, value)
                if type(state) is not state_type:
                    if fold_async or inspect.isawaitable(state):
                        state = await state
                    if type(state) is not state_type:
                        raise TypeError(
                            f"fold of table {table.name!r} returned {type(state).__name__}, "
                            f"not {state_type.__name__}"
                        )
                for attr, check in checks:
                    setattr(state, attr, check(getattr(state, attr)))
                result = row(key, state)
                data = encode(state)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # a hook's SystemExit too, as in every stream node
                await worker.dead_letter(carrier, exc, self._agent)
                continue
            put(raw_key, state, data)
            positions[src] = offset
            # Headers as a list: the Kafka transport's batch builder takes exactly that.
            records.append((raw_key, data, [(POSITION_HEADER, mark)]))
            partitions.append(last_q)
            if not event._acked:
                if kind is Event:
                    held.append((offsets, m.offset))
                # A chunk's member (not `cast`: a function call per element).
                elif (chunk := event._chunk) is not last_chunk:  # type: ignore[attr-defined]
                    # One hold on a chunk's entry keeps all its members in flight.
                    last_chunk = chunk
                    held.append((offsets, chunk.entry))
            rows.append(result)
            out.append(carrier)
        source.until_check = until_check
        if any(h.closed for h, _, _ in stretches):
            # A store was revoked while this run waited (a slow hook, another store's
            # restore): its new owner may be writing its changelog already, so what was
            # folded into it here is neither written nor published (never committed either:
            # its offsets are gone with the partition).
            records, partitions, kept, folded = _without_closed(
                stretches, records, partitions, list(zip(rows, out, strict=True))
            )
            rows, out = [r for r, _ in kept], [c for _, c in kept]
            stores = {q: s for q, (s, _) in folded.items()}
        if records:
            counts = Counter(partitions)  # before the skip maps join the run
            for q in counts:
                records.append(map_record(stores[q].positions))
                partitions.append(q)
            delivery = await worker.send_changelog(table.changelog.name, records, partitions)
            if delivery is None:  # not sent, the worker is stopping: nothing may be acked
                worker._hold_for_good(held)
                return
            for q, count in counts.items():
                stores[q].applied(count + 1)  # its data records and its skip map
            worker.tables.sent(delivery)
            worker._hold(cast("Awaitable[Delivery]", delivery), held)
        for h, _, _ in stretches:
            h.folding = False
        if self._next < len(self._rows):  # never, as pulled now: runs are folded when empty
            rows = self._rows[self._next :] + rows
            out = self._carriers[self._next :] + out
        self._rows, self._carriers, self._next = rows, out, 0


def hands_over_events(up: Stream[Any]) -> bool:
    """Whether `up`'s elements are its buffer's events as they are (the source, or the
    read-back side of a `group_by`): `take_run` then takes runs from the buffer directly."""
    return type(up).__anext__ is _next_source_value


async def take_run(up: Stream[Any], direct: bool) -> tuple[list[Any], list[Carrier]]:
    """The next run of `up`'s values and carriers (at most `_RUN_MAX`; none if nothing is at
    hand), for a node that folds runs; `direct`: `hands_over_events(up)`."""
    source = up._source
    # A sampled run is timed as a whole, from its taking to the taking of the next, and
    # counted as that time's share per element (never per pull: the pulls below follow one
    # another with nothing done between them).
    sampled = source.sample
    if sampled:
        source.sample = False
        if source.sample_run(0):
            sampled = False  # the run timed before ended now
    if direct:
        # Upstream hands over its buffer's events as they are: take a run of them at once,
        # with no element tuple and no coroutine each. The loop is shared per run here, and
        # every few elements while the run is folded (`Aggregate._fold_run`).
        await source.share_loop()
        buffer = source.buffer
        if source.chunked:
            events: list[Any] = _take_members(source)
        else:
            popleft = buffer.popleft
            events = [popleft() for _ in range(min(len(buffer), _RUN_MAX))]
            if source.full and len(buffer) <= source.low:
                up._worker.conductor.drained(source)
        if sampled:
            source.sample = True
            source.sample_run(len(events))
        return [e.value for e in events], events
    values: list[Any] = []
    carriers: list[Carrier] = []
    may_wait = False
    while len(values) < _RUN_MAX:
        if values and may_wait:
            break  # what is pulled is folded before an async hook gets to hold it back
        element = await up._pull()
        if element is EMPTY:
            break
        value, carrier = cast(Element, element)
        if not values:
            may_wait = up._may_wait()
        values.append(value)
        carriers.append(carrier)
    if sampled:
        source.sample = True
        source.sample_run(len(values))
    return values, carriers


def _take_members(source: Any) -> list[_Member]:
    """A run of a chunked source's elements, up to `_RUN_MAX` (a chunk that does not fit is
    cut, its rest left at the head of the buffer), as members of their chunks: no offsets
    entry of their own; acked per chunk by the fused loop downstream (`_Runs`). Their
    chunks' entries never move (`advance_run`): nothing here acks a chunk's prefix."""
    buffer: Any = source.buffer
    popleft = buffer.popleft
    members: list[_Member] = []
    room = _RUN_MAX
    while buffer and room:
        chunk: Chunk = buffer[0]
        messages, values = chunk.messages, chunk.values
        if len(values) > room:
            part = Chunk(chunk.state, chunk.entry, messages[:room], values[:room], chunk.kdecode)
            chunk.messages, chunk.values = messages[room:], values[room:]
            chunk = part
            messages, values = part.messages, part.values
        else:
            popleft()
        room -= len(values)
        state, kdecode = chunk.state, chunk.kdecode
        members += [
            _Member(m, v, state, kdecode, False, _UNDECODED, chunk)
            for m, v in zip(messages, values, strict=True)
        ]
    source.size -= len(members)
    if source.full and source.size <= source.low:
        source._worker.conductor.drained(source)
    return members


def _without_closed(
    stretches: list[tuple[_Held, int, int]],
    records: list[tuple[bytes | None, bytes | None, Headers]],
    partitions: list[int],
    out: list[Element],
) -> tuple[
    list[tuple[bytes | None, bytes | None, Headers]],
    list[int],
    list[Element],
    dict[int, tuple[Any, int]],
]:
    """The run without the records and outputs of stores closed since they were folded."""
    kept_records: list[tuple[bytes | None, bytes | None, Headers]] = []
    kept_partitions: list[int] = []
    kept_out: list[Element] = []
    folded: dict[int, tuple[Any, int]] = {}
    ends = [(r, o) for _, r, o in stretches[1:]] + [(len(records), len(out))]
    for (h, r0, o0), (r1, o1) in zip(stretches, ends, strict=True):
        if h.closed:
            continue
        kept_records += records[r0:r1]
        kept_partitions += partitions[r0:r1]
        kept_out += out[o0:o1]
        if r1 > r0:
            q = partitions[r0]
            seen = folded.get(q)
            folded[q] = (h.store, r1 - r0 + (0 if seen is None else seen[1]))
    return kept_records, kept_partitions, kept_out, folded


async def held_store(live: TablePartitions, event: Event[Any, Any]) -> _Held | None:
    """The store of `event`'s table partition once restored; None when the partition is gone
    (revoked while upstream held the event or while the store was restoring, or its restore
    failed): the partition's new owner handles the event."""
    if event._offsets.closed:
        return None
    partition = event.message.partition
    held = live.store(partition)
    if held is None:
        return None
    if not held.ready.is_set():
        await _ready(held)
        if live.store(partition) is not held or not held.ready.is_set():
            return None
    return held


async def _ready(held: _Held) -> None:
    """Until the store is restored, or its restore ended otherwise (cancelled on revocation,
    failed): a waiter must not outlive it."""
    task = held.task
    if task is None:
        await held.ready.wait()
        return
    ready = asyncio.ensure_future(held.ready.wait())
    try:
        await asyncio.wait((ready, task), return_when=asyncio.FIRST_COMPLETED)
    finally:
        ready.cancel()


class _NoHeld:
    closed = False


_NO_HELD = _NoHeld()


def _is_async(fn: Callable[..., Any]) -> bool:
    target: Any = fn
    while hasattr(target, "func"):
        target = target.func
    return inspect.iscoroutinefunction(target)
