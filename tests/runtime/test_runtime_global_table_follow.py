"""A global table follows its topic with one reader for its life (`Transport.follow`), and an
update reaches the table as soon as it is produced, not at a poll of the partitions' ends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Mapping, Sequence

import msgspec
from joinkit import Account, join_app
from rtkit import wait_for
from streamc_runtime.memory import MemoryBroker, MemoryMessage, MemoryTransport
from streamc_runtime.transport import TP, Delivery
from streamc_runtime.worker import Worker


class CountedReads(MemoryTransport):
    """Counts the group-less reads opened on each topic."""

    def __init__(self, broker: MemoryBroker, group_id: str) -> None:
        super().__init__(broker, group_id)
        self.reads: list[tuple[str, str]] = []  # (method, topic), in the order opened

    def read_partition(
        self, topic: str, partition: int, start: int
    ) -> AsyncIterator[Sequence[MemoryMessage]]:
        self.reads.append(("read_partition", topic))
        return super().read_partition(topic, partition, start)

    def follow(
        self, topic: str, starts: Mapping[int, int]
    ) -> AsyncGenerator[Sequence[MemoryMessage], None]:
        self.reads.append(("follow", topic))
        return super().follow(topic, starts)


def _account(key: str, tier: str) -> bytes:
    return msgspec.json.encode(Account(account_id=key, tier=tier))


async def _rounds(n: int) -> None:
    """`n` scheduler rounds, no timer: nothing a poll could have woken in between."""
    for _ in range(n):
        await asyncio.sleep(0)


async def test_a_global_table_applies_each_update_at_once_through_one_follow() -> None:
    app = join_app(global_=True, table_partitions=3)
    broker = MemoryBroker()
    for topic in app.topics.values():
        broker.create_topic(topic.name, topic.partitions, topic.config)
    broker.produce("accounts", _account("a0", "t0"), b"a0")
    transport = CountedReads(broker, "shop")
    worker = Worker(app, transport, stats_interval=0)
    await worker.start()
    try:
        await wait_for(lambda: "a0" in worker.table("accounts_by_id"))
        glob = worker.tables.globals["accounts_by_id"]
        for i in range(1, 6):
            key = f"a{i % 3}"  # new rows and updates of rows, over the partitions
            broker.produce("accounts", _account(key, f"t{i}"), key.encode())
            await _rounds(5)
            assert worker.table("accounts_by_id")[key].tier == f"t{i}"
        broker.produce("accounts", None, b"a1")  # a tombstone deletes the row at once too
        await _rounds(5)
        assert sorted(worker.table("accounts_by_id")) == ["a0", "a2"]
        ends = [broker.end_offset(TP("accounts", p)) for p in range(3)]
        assert glob.ends == ends
        assert [r for r in transport.reads if r[1] == "accounts"] == [("follow", "accounts")]
    finally:
        await worker.stop()


class StuckDeadLetters(MemoryTransport):
    """Dead letters never leave (`send` to the DLQ waits for ever); records when the global
    table's follow is closed."""

    def __init__(self, broker: MemoryBroker, group_id: str) -> None:
        super().__init__(broker, group_id)
        self.dead_lettering = asyncio.Event()
        self.follow_closed = False

    async def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
        partition: int | None = None,
        timestamp: int | None = None,
    ) -> Awaitable[Delivery]:
        if topic == "shop-dlq":
            self.dead_lettering.set()
            await asyncio.Event().wait()
        return await super().send(topic, value, key, headers, partition, timestamp)

    async def follow(
        self, topic: str, starts: Mapping[int, int]
    ) -> AsyncGenerator[Sequence[MemoryMessage], None]:
        try:
            async for batch in super().follow(topic, starts):
                yield batch
        finally:
            self.follow_closed = True


async def test_a_global_table_closes_its_follow_before_its_reader_ends_on_a_cancel() -> None:
    """Cancelled while it awaits a dead letter (outside the follow), the reader still closes
    the follow (on Kafka: stops its consumer) before it ends, not whenever it is collected."""
    app = join_app(global_=True, partitions=1)
    broker = MemoryBroker()
    for topic in app.topics.values():
        broker.create_topic(topic.name, topic.partitions, topic.config)
    transport = StuckDeadLetters(broker, "shop")
    worker = Worker(app, transport, stats_interval=0)
    await worker.start()
    glob = worker.tables.globals["accounts_by_id"]
    try:
        await asyncio.wait_for(glob.ready.wait(), 5)
        broker.produce("accounts", b"{not json", b"a1")
        await asyncio.wait_for(transport.dead_lettering.wait(), 5)
        assert not transport.follow_closed
        closed_at_end: list[bool] = []  # as the reader's task ends, not once it is collected
        glob.task.add_done_callback(lambda _: closed_at_end.append(transport.follow_closed))
        glob.task.cancel()
        await asyncio.wait({glob.task}, timeout=5)
        assert glob.task.cancelled()
        assert closed_at_end == [True]
    finally:
        await worker.stop()


async def test_memory_follow_goes_on_from_the_base_after_a_trim_to_the_end_mid_read() -> None:
    """Trimmed to the end while the caller holds a chunk (more than one chunk to read): the
    follow goes on from the new base (as `read_partition` does), saying it is caught up, and
    hands out what is produced next; it used to index an empty read and fail."""
    broker = MemoryBroker()
    broker.create_topic("t", 1)
    broker.produce_many("t", [(b"k", b"v", ())] * 10_005)
    transport = MemoryTransport(broker, "g")
    follow = transport.follow("t", {0: 0})
    try:
        first = await anext(follow)
        assert (first[0].offset, first[-1].offset) == (0, 9_999)  # one chunk of the two
        broker._commit("g", {TP("t", 0): 10_005})
        assert broker.trim() == 10_005
        assert await anext(follow) == ()
        broker.produce("t", b"new", b"k")
        assert [(m.offset, m.value) for m in await anext(follow)] == [(10_005, b"new")]
    finally:
        await follow.aclose()


async def test_a_global_table_reads_every_partition_its_topic_has_not_only_the_declared_ones() -> (
    None
):
    app = join_app(global_=True, table_partitions=2)
    broker = MemoryBroker()
    for topic in app.topics.values():
        # The accounts topic already exists with one partition more than the app declares.
        broker.create_topic(topic.name, 3 if topic.name == "accounts" else topic.partitions)
    for p in range(3):
        broker.produce("accounts", _account(f"a{p}", f"t{p}"), f"a{p}".encode(), partition=p)
    worker = Worker(app, MemoryTransport(broker, "shop"), stats_interval=0)
    await worker.start()
    try:
        await wait_for(lambda: len(worker.table("accounts_by_id")) == 3)
        assert {k: v.tier for k, v in worker.table("accounts_by_id").items()} == {
            "a0": "t0",
            "a1": "t1",
            "a2": "t2",
        }
        assert worker.tables.globals["accounts_by_id"].ends == [1, 1, 1]
    finally:
        await worker.stop()
