"""`Stream.aggregate`: fold each element into its key's state in a table, pass the row on.

The node folds runs: whatever upstream has at hand (up to `_RUN_MAX` elements) is folded,
element by element in order, then the run's changelog records go out in one `send_many` (one
per applied input, in apply order, never reordered or merged: a partially delivered run must
be a prefix), followed by the skip map of each table partition the run touched. Then the
elements go downstream one by one, as `(row(key, state), carrier)`. A carrier stays in flight
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
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

from ..stream import EMPTY, Element, Event, Pulled, Stream
from ..transport import Delivery, Headers
from .changelog import POSITION_HEADER, map_record

if TYPE_CHECKING:
    from .table import Table, TablePartitions, _Held

__all__ = ["Aggregate"]

_RUN_MAX = 1000


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
        self._out: deque[Element] = deque()  # folded, and their changelog records sent

    async def _pull(self) -> Pulled:
        out = self._out
        if not out:
            await self._fold_run()
            if not out:
                return EMPTY
        return out.popleft()

    async def _fold_run(self) -> None:
        up = self._up
        assert up is not None
        worker = self._worker
        table, live = self._table, self._live
        fold, row, fold_async, checks = self._fold, self._row, self._fold_async, self._checks
        state_type = table.state_type
        encode = table.state_codec.encode
        records: list[tuple[bytes | None, bytes | None, Headers]] = []
        partitions: list[int] = []
        folded: dict[int, tuple[Any, int]] = {}  # partition -> (store, records in this run)
        out: list[Element] = []
        held: list[Any] = []
        positions_cache: dict[tuple[str, int], str] = {}
        store: Any = None
        last_q = -1
        last_offsets: Any = None
        last_held: Any = _NO_HELD
        # (store held, first record, first output) of each stretch of one partition's elements
        stretches: list[tuple[_Held, int, int]] = []
        may_wait = False
        while len(out) < _RUN_MAX:
            if out and may_wait:
                break  # what is folded goes out before an async hook gets to hold it back
            element = await up._pull()
            if element is EMPTY:
                break
            value, carrier = cast(Element, element)
            if not out:
                may_wait = up._may_wait()
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
                stretches.append((h, len(records), len(out)))
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
                src = positions_cache.get((m.topic, m.partition))
                if src is None:
                    src = positions_cache[(m.topic, m.partition)] = f"{m.topic}:{m.partition}"
                offset = m.offset
                mark = f"{src}:{offset}".encode()
            else:
                text = mark.decode()
                cut = text.rindex(":")
                src, offset = text[:cut], int(text[cut + 1 :])
            key = event.key
            positions = store.positions
            state = store.get(raw_key)
            try:
                if offset <= positions.get(src, -1):
                    # A replay: applied already. Its key's current row goes on all the same.
                    out.append((row(key, state if state is not None else state_type()), carrier))
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
            store.put(raw_key, state, data)
            positions[src] = offset
            records.append((raw_key, data, ((POSITION_HEADER, mark),)))
            partitions.append(last_q)
            seen = folded.get(last_q)
            folded[last_q] = (store, 1 if seen is None else seen[1] + 1)
            if not event._acked:
                held.append((event._offsets, m.offset))
            out.append((result, carrier))
        if any(h.closed for h, _, _ in stretches):
            # A store was revoked while this run waited (a slow hook, another store's
            # restore): its new owner may be writing its changelog already, so what was
            # folded into it here is neither written nor published (never committed either:
            # its offsets are gone with the partition).
            records, partitions, out, folded = _without_closed(stretches, records, partitions, out)
        if records:
            for q, (s, _) in folded.items():
                records.append(map_record(s.positions))
                partitions.append(q)
            delivery = await worker.send_changelog(table.changelog.name, records, partitions)
            if delivery is None:  # not sent, the worker is stopping: nothing may be acked
                worker._hold_for_good(held)
                return
            for s, count in folded.values():
                s.applied(count + 1)  # its data records and its skip map
            worker.tables.sent(delivery)
            worker._hold(cast("Awaitable[Delivery]", delivery), held)
        for h, _, _ in stretches:
            h.folding = False
        self._out.extend(out)


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
