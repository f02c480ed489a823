"""`Table` (what `App.table` declares) and `WorkerTables` (the stores a running worker holds).

A worker holds store q of a table while it is assigned partition q of the aggregation's input
(co-partitioned with the changelog). The store is restored at assignment, in the background,
and the aggregation waits for it before folding the first element of q. On revocation the
store is checkpointed after a flush (every changelog record sent is delivered) and closed;
the new owner restores it from the changelog. At shutdown the same happens for every store.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ..records import Codec, DecodeError, key_codec, value_codec
from ..transport import TP, DeliveryError, Message, TopicSpec
from .changelog import restore
from .memory import MemoryStore
from .store import Store
from .window_types import Windowed, WindowSpec, rows_of

if TYPE_CHECKING:
    from ..topic import Topic, TopicOwner
    from ..worker import Worker

__all__ = ["Table", "TablePartitions", "WorkerTables"]

logger = logging.getLogger("streamc")

K = TypeVar("K")
S = TypeVar("S")


class Table(Generic[K, S]):
    """A keyed table: one state per key, its changelog `<app>-<name>-changelog`."""

    def __init__(
        self,
        app: TopicOwner,
        name: str,
        key_type: Any,
        value_type: Any,
        state_type: Any,
        partitions: int,
        changelog: Topic[Any],
        window: WindowSpec | None = None,
        source: Topic[Any] | None = None,
        global_: bool = False,
    ) -> None:
        self.app = app
        self.name = name
        self.key_type = key_type
        self.value_type = value_type
        self.state_type = state_type
        self.partitions = partitions
        self.changelog = changelog
        # Windowed: states are `Windowed[state_type]` per (key, window) (see `window_types.py`).
        self.window = window
        # Declared while the worker runs (`distinct`): its changelog is created at restore.
        self.ensure = False
        self.state_codec: Codec[Any] = value_codec(
            state_type if window is None else Windowed[state_type]
        )
        # The aggregation's row function, once one is built on this table (rows of a state).
        self.row: Callable[..., Any] | None = None
        # A table over a topic (`state/join.py`): the topic is its changelog (rows are its
        # records, last per key, a null value deletes); no aggregate fills it. A global one
        # is held whole by every worker.
        self.source = source
        self.global_ = global_

    def __repr__(self) -> str:
        return f"<Table {self.name} key={self.key_type!r} state={self.state_type!r}>"


class _Held:
    """Store q of a table on this worker, and whether its restore is done."""

    __slots__ = ("closed", "end", "folding", "ready", "store", "task")

    def __init__(self, store: Store) -> None:
        self.store = store
        self.ready = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        # Set when the partition leaves: an aggregation run that folded into the store
        # meanwhile drops what it folded (the changelog belongs to the next owner).
        self.closed = False
        self.folding = False  # an aggregation run folded into it and has not sent it all yet
        # A source table's: the topic offset its rows reach (records below it are applied).
        self.end = 0


class TablePartitions:
    """One table on one worker: the stores of the partitions it holds."""

    def __init__(self, tables: WorkerTables, table: Table[Any, Any], inputs: frozenset[str]):
        self.tables = tables
        self.table = table
        # The aggregation's input topics (a source table's: its joins' inputs): partition q
        # of any of them means store q.
        self.inputs = inputs
        self.held: dict[int, _Held] = {}

    def store(self, partition: int) -> _Held | None:
        return self.held.get(partition)

    def open(self, partition: int) -> None:
        if partition in self.held:
            return
        kept = self.tables.kept.pop((self.table.name, partition), None)
        held = _Held(kept if kept is not None else self.tables.new_store(self.table, partition))
        self.held[partition] = held
        worker = self.tables.worker
        what = f"table {self.table.name}[{partition}]"
        held.task = worker._spawn(self._restore(held, partition, what), f"restore {what}")

    async def _restore(self, held: _Held, partition: int, what: str) -> None:
        worker = self.tables.worker
        transport: Any = worker.transport
        changelog = self.table.changelog
        if self.table.ensure:
            spec = TopicSpec(changelog.name, changelog.partitions, changelog.config)
            await transport.ensure_topics([spec])
        # A table over a user's topic reads data a producer wrote: bad records are reported.
        valid = (
            None
            if self.table.source is None
            else valid_records(worker, self.table, dead_letter=False)
        )
        await restore(transport, changelog.name, partition, held.store, what, valid)
        held.end = held.store.restore_from()
        held.ready.set()

    def rows(self) -> dict[Any, Any]:
        table = self.table
        decode_key, row = table.changelog.key_codec.decode, table.row
        out: dict[Any, Any] = {}
        if table.window is not None:
            decode_key = key_codec(table.key_type).decode
            for held in self.held.values():
                if held.ready.is_set():
                    out.update(rows_of(row, held.store.items(), decode_key))
            return out
        for held in self.held.values():
            if not held.ready.is_set():
                continue
            for raw, state in held.store.items():
                key = decode_key(raw)
                out[key] = state if row is None else row(key, state)
        return out


def valid_records(
    worker: Worker, table: Table[Any, Any], *, dead_letter: bool
) -> Callable[[Sequence[Message]], Awaitable[Sequence[Message]]]:
    """For reading a table's topic outside the group (a restore, a global table): the records
    of a batch whose value decodes. The others are bad data a producer wrote, not ours: they
    leave the key's row as it was, so one bad record never stops a worker for good.

    `dead_letter`: report each on the dead-letter topic (a global table: no group reads its
    topic, so every worker that reads the record reports it, at every start). A co-partitioned
    table's restore only logs it: its topic is also consumed through the group, which
    dead-letters each bad record once it is read there."""
    decode, agent = table.state_codec.decode, f"table {table.name}"

    async def valid(batch: Sequence[Message]) -> Sequence[Message]:
        bad: list[tuple[Message, DecodeError]] = []
        for m in batch:
            if m.key is not None and m.value is not None:
                try:
                    decode(m.value)
                except DecodeError as exc:
                    bad.append((m, exc))
        if not bad:
            return batch
        for m, error in bad:
            if dead_letter:
                await worker.dead_letter_record(m, error, agent)
            else:
                logger.warning(
                    "%s: skipping undecodable record %s[%d]@%d while restoring: %s",
                    agent,
                    m.topic,
                    m.partition,
                    m.offset,
                    error,
                )
        dropped = {id(m) for m, _ in bad}
        return [m for m in batch if id(m) not in dropped]

    return valid


class WorkerTables:
    """Every table a worker aggregates into, and their stores' lifecycle."""

    def __init__(self, worker: Worker, state_dir: str | Path | None) -> None:
        self.worker = worker
        self.state_dir = None if state_dir is None else Path(state_dir)
        self.tables: dict[str, TablePartitions] = {}
        # Deliveries of changelog runs not resolved yet: a checkpoint waits for those sent
        # before it and is not written if one failed.
        self._in_flight: set[asyncio.Future[Any]] = set()
        # Memory stores of revoked partitions, kept aside with the changelog offset their
        # states reach: when the partition comes back (aiokafka revokes every partition on a
        # rebalance, and assigns most of them back), the restore only reads what others wrote
        # after it, instead of the whole changelog.
        self.kept: dict[tuple[str, int], Store] = {}
        self.globals: dict[str, Any] = {}  # global tables, by name (`state/join.py`)

    def sent(self, delivery: Awaitable[object]) -> None:
        """A changelog run went out (every store it touched has counted it)."""
        if isinstance(delivery, asyncio.Future) and delivery.done():
            if delivery.cancelled() or delivery.exception() is not None:
                self._in_flight.add(delivery)  # kept: a checkpoint must see the failure
            return
        fut = asyncio.ensure_future(delivery)
        self._in_flight.add(fut)
        fut.add_done_callback(self._resolved)

    def _resolved(self, fut: asyncio.Future[Any]) -> None:
        if not fut.cancelled() and fut.exception() is None:
            self._in_flight.discard(fut)

    def new_store(self, table: Table[Any, Any], partition: int) -> Store:
        decode = table.state_codec.decode
        # A source table's topic is its changelog, read again at each assignment: nothing of
        # it to checkpoint, so its stores stay in memory.
        if self.state_dir is None or table.source is not None:
            return MemoryStore(decode)
        from .rocksdb import RocksDBStore  # the native library only when asked for

        path = self.state_dir / table.app.name / table.name / str(partition)
        return RocksDBStore(path, decode)

    def attach(self, table: Table[Any, Any], inputs: Collection[str]) -> TablePartitions:
        """The aggregation on `table` reading `inputs` is built: stores follow the
        assignment of those topics from now on."""
        live = self.tables.get(table.name)
        if live is not None and table.source is not None:
            live.inputs |= frozenset(inputs)  # another join on the same source table
            self.assigned(self.worker.transport.assignment())
            return live
        if live is not None:
            raise ValueError(f"table {table.name!r} is already filled by another aggregate")
        live = self.tables[table.name] = TablePartitions(self, table, frozenset(inputs))
        self.assigned(self.worker.transport.assignment())
        return live

    def assigned(self, assigned: Collection[TP]) -> None:
        for live in self.tables.values():
            for tp in assigned:
                if tp.topic in live.inputs:
                    live.open(tp.partition)

    async def revoked(self, gone: Collection[TP]) -> None:
        """Checkpoint and close the stores of partitions no input of theirs is assigned in
        any more (after a flush: their changelog records are delivered)."""
        staying = {tp for tp in self.worker.transport.assignment() if tp not in gone}
        closing: list[tuple[TablePartitions, int]] = []
        for live in self.tables.values():
            kept = {tp.partition for tp in staying if tp.topic in live.inputs}
            closing += [(live, q) for q in live.held if q not in kept]
        if closing:
            await self._close(closing, keep=self.state_dir is None)

    async def close(self) -> None:
        """At shutdown, after the producer's flush: checkpoint and close every store."""
        # The global tables with the others: each kind's readers get `shutdown_timeout` to end
        # at the same time, not one after the other (which would spend the stop's whole bound
        # for this step on them, so a stuck global reader was never named).
        ended = await asyncio.gather(
            self._close([(live, q) for live in self.tables.values() for q in live.held]),
            *(held.close() for held in self.globals.values()),
            return_exceptions=True,
        )
        for outcome in ended:
            if isinstance(outcome, BaseException):
                raise outcome
        for store in self.kept.values():
            store.close()
        self.kept.clear()

    async def _close(self, closing: list[tuple[TablePartitions, int]], keep: bool = False) -> None:
        helds = [live.held.pop(q) for live, q in closing]
        for held in helds:
            held.closed = True
        # Together: each may take up to the worker's `shutdown_timeout` to end.
        end = self.worker._end
        await asyncio.gather(*(end(h.task) for h in helds if h.task is not None))
        ready = [h for h in helds if h.ready.is_set()]
        await self._checkpoint(ready)
        # A memory store is kept only if the changelog holds all of it: restored, nothing
        # folded and unsent, every record sent delivered (RocksDB stores need none of this:
        # they reopen at their checkpoint, which is where this worker's writes end).
        if keep and ready and not any(h.folding for h in ready) and await self._delivered():
            for (live, q), held in zip(closing, helds, strict=True):
                if held in ready and not held.folding:
                    self.kept[(live.table.name, q)] = held.store
        for held in helds:
            if held.store not in self.kept.values():
                held.store.close()

    async def _delivered(self) -> bool:
        """Whether every changelog record sent so far is delivered (after a flush)."""
        worker = self.worker
        runs = set(self._in_flight)
        try:
            await worker.transport.flush()
        except DeliveryError as exc:
            worker.lose_output(exc)
        if runs:
            await asyncio.wait(runs)
        failed = any(f.cancelled() or f.exception() is not None for f in runs)
        return not failed and worker.failure is None and worker.output_lost is None

    async def checkpoint(self) -> None:
        """Before a commit: persistent stores write what their delivered changelog holds."""
        if self.state_dir is not None:
            ready = [h for live in self.tables.values() for h in live.held.values()]
            await self._checkpoint([h for h in ready if h.ready.is_set()])

    async def _checkpoint(self, helds: list[_Held]) -> None:
        worker = self.worker
        if self.state_dir is None or not helds or worker.failure is not None:
            # (failing: no checkpoint is written, see below; nor is the producer waited for
            # again, which at a stop it may already have failed to flush)
            return
        snapshots = [(held.store, held.store.snapshot()) for held in helds]
        runs = set(self._in_flight)
        try:
            await worker.transport.flush()
        except DeliveryError as exc:
            worker.lose_output(exc)
        if runs:
            await asyncio.wait(runs)
        # After any failure a delivery may have been lost: the stores keep their last
        # checkpoint, and a restore replays the changelog after it.
        failed = any(f.cancelled() or f.exception() is not None for f in runs)
        if failed or worker.failure is not None or worker.output_lost is not None:
            return
        for store, snapshot in snapshots:
            try:
                store.checkpoint(snapshot)
            except Exception as exc:  # the database's write (one WriteBatch) failed
                # The store keeps its previous checkpoint, and a restore replays the changelog
                # after it. It must never be checkpointed again: what this snapshot took is no
                # longer waiting to be written, so a later mark would cover states the database
                # lacks. Failing the worker stops every later checkpoint (see above); the other
                # stores are still written and every store is still closed.
                logger.error("checkpoint of a table store failed: %s; stopping", exc)
                worker.fail(exc)
