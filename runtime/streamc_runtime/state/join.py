"""Stream-table joins: `Stream.join(table, on=, left=)`, and tables over a topic.

A table over a topic (`App.table(..., source=topic)`) keeps no changelog of its own: the topic
is its changelog. Co-partitioned, store q is held while partition q of a joining stream is
assigned (the stores of `table.py`, restored from partition q of the topic), and the topic is
subscribed like any input: a follower applies each record to store q (a null value deletes
the key) and acks it. Records below the offset a restore reached are applied already and are
skipped, so a lookup never sees a row go back to an older value. A global table is one store
with every partition, read whole (group-less) before the first lookup and followed from there by
the same reader (`Transport.follow`), which hands an update over as soon as it arrives.

The join node looks up each element's row by its message key (`on=None`) or by `on(value)`
encoded with the table's key codec, waiting for the partition's store like `aggregate`, and
yields `(value, row)` with the key unchanged; an inner join acks and drops a miss, a left join
passes `(value, None)`. A row handed downstream is a copy: a processor changing it does not
change the table.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from ..events import EMPTY, Element, Event, Pulled, ack_carrier
from ..records import DecodeError
from ..source import SourceStream
from ..stream import Stream
from .aggregate import _ready
from .memory import MemoryStore
from .table import valid_records

if TYPE_CHECKING:
    from ..worker import Worker
    from .table import Table, TablePartitions

__all__ = ["GlobalTable", "StreamJoin"]

logger = logging.getLogger("streamc")


class GlobalTable:
    """A global table on one worker: every partition of its topic in one store."""

    def __init__(self, worker: Worker, table: Table[Any, Any]) -> None:
        self.worker = worker
        self.table = table
        self.store = MemoryStore(table.state_codec.decode)
        self.ready = asyncio.Event()
        self.ends: list[int] = [0] * table.partitions
        self.task = worker._spawn(self._run(), f"global table {table.name}")

    async def _run(self) -> None:
        table, store, transport = self.table, self.store, self.worker.transport
        topic = table.changelog.name
        logger.info("reading global table %s from %s", table.name, topic)
        count = 0
        valid = valid_records(self.worker, table, dead_letter=True)
        decode = table.state_codec.decode
        ends, ready = self.ends, self.ready
        # One follow for the table's life: the first read is what it yields before it says it
        # is caught up (an empty batch), the updates are what it yields after. Closed here
        # whatever ends the loop: a cancel landing while this awaits a dead letter would
        # leave its consumer to the garbage collector.
        # Every partition the topic has, which can differ from the declared count for a table
        # over a user's topic (`ensure_topics` only warns): a global table holds every row.
        partitions = transport.partitions_for(topic) or table.partitions
        if partitions != len(ends):
            ends[:] = [0] * partitions
        follow = transport.follow(topic, dict.fromkeys(range(partitions), 0))
        async with contextlib.aclosing(follow) as batches:
            async for batch in batches:
                if not batch:
                    if not ready.is_set():
                        store.restore_done()
                        logger.info(
                            "read global table %s: %d records, %d rows",
                            table.name,
                            count,
                            len(store._states),
                        )
                        ready.set()
                    continue
                if not ready.is_set():
                    ends[batch[-1].partition] = batch[-1].offset + 1
                    count += len(batch)
                    kept = await valid(batch)
                    store.restore_batch([(m.key, m.value) for m in kept if m.key is not None], 0)
                    continue
                for m in batch:
                    p = m.partition
                    if m.offset < ends[p]:
                        continue
                    ends[p] = m.offset + 1  # a keyless record is read too (no row)
                    if m.key is None:
                        continue
                    if m.value is None:
                        store.delete(m.key)
                        continue
                    try:
                        state = decode(m.value)
                    except DecodeError as exc:
                        await self.worker.dead_letter_record(m, exc, f"table {table.name}")
                        continue
                    store.put(m.key, state, m.value)
        raise RuntimeError(f"the follow of {topic} ended: global table {table.name} went stale")

    def rows(self) -> dict[Any, Any]:
        if not self.ready.is_set():
            return {}
        decode = self.table.changelog.key_codec.decode
        return {decode(raw): row for raw, row in self.store.items()}

    async def close(self) -> None:
        await self.worker._end(self.task)
        self.store.close()


def global_table(worker: Worker, table: Table[Any, Any]) -> GlobalTable:
    held = worker.tables.globals.get(table.name)
    if held is None:
        held = worker.tables.globals[table.name] = GlobalTable(worker, table)
    return cast(GlobalTable, held)


def source_partitions(worker: Worker, table: Table[Any, Any], inputs: list[str]) -> TablePartitions:
    """The stores of a co-partitioned source table, following the assignment of `inputs`;
    the first join on it subscribes its topic, whose records update the stores."""
    tables = worker.tables
    first = table.name not in tables.tables
    live = tables.attach(table, inputs)
    if first:
        assert table.source is not None
        source = worker.source_for((table.source,), f"table {table.name}")
        worker.spawn_driver(_follow(live, source), f"table {table.name}: {table.source.name}")
    return live


async def _follow(live: TablePartitions, source: SourceStream[Any]) -> None:
    """Apply the topic's records to the stores they belong to, in order, and ack them."""
    while True:
        element = await source._pull()
        if element is EMPTY:
            if source.closed:
                return
            await source.wait(None)
            continue
        value, carrier = cast(Element, element)
        event = cast(Event[Any, Any], carrier)
        m = event.message
        held = live.store(m.partition)
        if held is not None and not held.ready.is_set():
            await _ready(held)
            if live.store(m.partition) is not held or not held.ready.is_set():
                held = None
        # Not held here (no joining partition q assigned): its holder restores it.
        if held is not None and m.key is not None and m.offset >= held.end:
            if m.value is None:
                held.store.delete(m.key)
            else:
                held.store.put(m.key, value, m.value)
            held.end = m.offset + 1
        event._ack()


class StreamJoin(Stream[Any]):
    _op = "join"
    _changes_values = True

    def __init__(
        self,
        up: Stream[Any],
        table: Table[Any, Any],
        on: Callable[[Any], Any] | None,
        left: bool,
    ) -> None:
        super().__init__(up._worker, up, up._source)
        if table.window is not None:
            raise ValueError(f"table {table.name!r} is windowed: a join needs a keyed table")
        self._table = table
        self._on = on
        self._left = left
        self._encode_key = table.changelog.key_codec.encode
        self._global: GlobalTable | None = None
        self._live: TablePartitions | None = None
        worker = self._worker
        if table.global_:
            self._global = global_table(worker, table)
        elif table.source is not None:
            self._live = source_partitions(worker, table, [t.name for t in up._source.topics])

    def _partitions(self) -> TablePartitions | None:
        # A table an aggregate fills: its stores follow the aggregation's input, which may be
        # built after this join (another agent).
        if self._live is None:
            self._live = self._worker.tables.tables.get(self._table.name)
        return self._live

    async def _pull(self) -> Pulled:
        up = self._up
        assert up is not None
        worker, table, on, encode_key = self._worker, self._table, self._on, self._encode_key
        row_of = table.row if table.source is None else None
        while True:
            element = await up._pull()
            if element is EMPTY:
                return EMPTY
            value, carrier = cast(Element, element)
            if type(carrier) is not Event:
                await worker.dead_letter(
                    carrier, TypeError("join takes single elements, not batches"), self._agent
                )
                continue
            m = carrier.message
            glob = self._global
            if glob is not None:
                if not glob.ready.is_set():
                    await _ready_global(glob)
                    if not glob.ready.is_set():
                        continue  # its reader failed: the worker is stopping, nothing acked
                store: Any = glob.store
            else:
                live = self._partitions()
                held = None if live is None else live.store(m.partition)
                if held is None:
                    if carrier._offsets.closed:
                        continue  # revoked while upstream held it: the new owner joins it
                    await worker.dead_letter(
                        carrier,
                        LookupError(
                            f"table {table.name!r} partition {m.partition} is not held by "
                            "this worker (not co-partitioned with the joined stream)"
                        ),
                        self._agent,
                    )
                    continue
                if not held.ready.is_set():
                    await _ready(held)
                    if live is None or live.store(m.partition) is not held:
                        continue  # revoked meanwhile: the new owner joins it
                    if not held.ready.is_set():
                        continue  # its restore failed: the worker is stopping
                store = held.store
            try:
                if on is None:
                    raw = m.key
                else:
                    key = on(value)
                    raw = None if key is None else encode_key(key)
                row = None if raw is None else store.get(raw)
                if row is not None:
                    if row_of is None:
                        row = copy.copy(row)
                    else:
                        row = row_of(carrier.key if on is None else key, row)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # a hook's SystemExit too, as in every stream node
                await worker.dead_letter(carrier, exc, self._agent)
                continue
            if row is None and not self._left:
                ack_carrier(carrier)  # no row: an inner join drops it, handled
                continue
            return ((value, row), carrier)


async def _ready_global(glob: GlobalTable) -> None:
    """Until the global table is read whole, or its reader ended otherwise (failed: the
    worker stops)."""
    ready = asyncio.ensure_future(glob.ready.wait())
    try:
        await asyncio.wait((ready, glob.task), return_when=asyncio.FIRST_COMPLETED)
    finally:
        ready.cancel()
