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
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

from ..stream import (
    _UNDECODED,
    EMPTY,
    Carrier,
    Element,
    Event,
    Pulled,
    Stream,
    _next_source_value,
    ack_carrier,
)
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
    ) -> None:
        super().__init__(up._worker, up, up._source)
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
        self._direct = type(up).__anext__ is _next_source_value
        # Source partitions as the skip map names them, by their bytes in position headers.
        self._names: dict[bytes, str] = {}

    async def _pull(self) -> Pulled:
        i = self._next
        if i >= len(self._rows):
            await self._fold_run()
            i = self._next
            if i >= len(self._rows):
                return EMPTY
        self._next = i + 1
        return (self._rows[i], self._carriers[i])

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

    async def _take_run(self) -> tuple[list[Any], list[Carrier]]:
        """The next run's values and carriers (at most `_RUN_MAX`; none if nothing is at hand)."""
        up = self._up
        assert up is not None
        if self._direct:
            # Upstream hands over its buffer's events as they are: take a run of them at once,
            # with no element tuple and no coroutine each.
            source = up._source
            buffer = source.buffer
            popleft = buffer.popleft
            events: list[Any] = [popleft() for _ in range(min(len(buffer), _RUN_MAX))]
            if source.full and len(buffer) <= source.low:
                self._worker.conductor.drained(source)
            return [e.value for e in events], events
        values: list[Any] = []
        carriers: list[Carrier] = []
        may_wait = False
        while len(values) < _RUN_MAX:
            if values and may_wait:
                break  # what is pulled goes out before an async hook gets to hold it back
            element = await up._pull()
            if element is EMPTY:
                break
            value, carrier = cast(Element, element)
            if not values:
                may_wait = up._may_wait()
            values.append(value)
            carriers.append(carrier)
        return values, carriers

    async def _fold_run(self) -> None:
        values, carriers = await self._take_run()
        if not values:
            return
        worker = self._worker
        table, live = self._table, self._live
        fold, row, fold_async = self._fold, self._row, self._fold_async
        state_type = table.state_type
        encode = table.state_codec.encode
        names = self._names
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
        for value, carrier in zip(values, carriers, strict=True):
            if type(carrier) is not Event:
                await worker.dead_letter(
                    carrier, TypeError("aggregate takes single elements, not batches"), self._agent
                )
                continue
            event = carrier
            m = event.message
            offsets = event._offsets
            if offsets is not last_offsets or offsets.closed:
                # Another source partition (or this one revoked): find its table partition's store.
                if offsets.closed:
                    continue  # revoked while upstream held it: the new owner handles it
                h = live.store(m.partition)
                if h is None:
                    continue  # likewise: its store left with the partition
                if not h.ready.is_set():
                    await _ready(h)
                    if live.store(m.partition) is not h:
                        continue
                store, last_q, last_offsets = h.store, m.partition, offsets
                get, put, positions = store.get, store.put, store.positions
                own_src = f"{m.topic}:{m.partition}"
                own_prefix = f"{own_src}:".encode()
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
                if src is None:
                    src = names[head] = head.decode()
                offset = int(tail)
            key = event._key
            if key is _UNDECODED:
                key = event.key
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
                result = row(key, state)
                data = encode(state)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # a hook's SystemExit too, as in every stream node
                await worker.dead_letter(carrier, exc, self._agent)
                continue
            put(raw_key, state, data)
            positions[src] = offset
            # Headers as a list: what the Kafka producer's batch builder takes as it is.
            records.append((raw_key, data, [(POSITION_HEADER, mark)]))
            partitions.append(last_q)
            stores[last_q] = store
            if not event._acked:
                held.append((offsets, m.offset))
            rows.append(result)
            out.append(carrier)
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
        if self._next < len(self._rows):  # never, as pulled now: runs are folded when empty
            rows = self._rows[self._next :] + rows
            out = self._carriers[self._next :] + out
        self._rows, self._carriers, self._next = rows, out, 0


async def _ready(held: _Held) -> None:
    await held.ready.wait()


def _is_async(fn: Callable[..., Any]) -> bool:
    target: Any = fn
    while hasattr(target, "func"):
        target = target.func
    return inspect.iscoroutinefunction(target)
