"""Stream-table joins on the memory transport: lookups by key and by field, inner and left,
a table that follows its topic (updates, deletes), restore across revocation, global tables."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from typing import Any

import msgspec
from joinkit import Account, Enriched, join_app
from rtkit import Order, Running, wait_for
from streamc_runtime.memory import MemoryBroker, MemoryMessage, MemoryTransport, partition_for_key
from streamc_runtime.worker import Worker


def key_on(partition: int, partitions: int = 2, skip: int = 0) -> str:
    keys = (f"acc{i}" for i in range(1000))
    return [k for k in keys if partition_for_key(k.encode(), partitions) == partition][skip]


def enriched(r: Running) -> list[tuple[str, Enriched]]:
    return [
        ((m.key or b"").decode(), msgspec.json.decode(m.value or b"", type=Enriched))
        for m in r.messages("enriched")
    ]


async def test_an_inner_join_by_key_pairs_each_order_with_its_account_and_drops_misses() -> None:
    async with Running(join_app()) as r:
        r.produce("accounts", Account(account_id="a1", tier="gold"), key="a1")
        r.produce("accounts", Account(account_id="a2", tier="silver"), key="a2")
        await wait_for(lambda: len(r.worker.table("accounts_by_id")) == 2)
        for account, amount in (("a1", 1.0), ("zz", 2.0), ("a2", 3.0), ("a1", 4.0)):
            r.produce("orders", Order(account_id=account, amount=amount), key=account)
        await r.idle()
        got = sorted(enriched(r), key=lambda kv: kv[1].amount)
        assert got == [
            ("a1", Enriched(account_id="a1", amount=1.0, tier="gold")),
            ("a2", Enriched(account_id="a2", amount=3.0, tier="silver")),
            ("a1", Enriched(account_id="a1", amount=4.0, tier="gold")),
        ]
        # the dropped miss is handled: every order's offset is committed
        await r.worker.commit()
        assert sum(r.committed("orders").values()) == 4


async def test_a_left_join_by_field_passes_none_for_a_miss_and_keeps_the_key() -> None:
    async with Running(join_app(left=True, by_field=True)) as r:
        r.produce("accounts", Account(account_id="a1", tier="gold"), key="a1")
        await wait_for(lambda: len(r.worker.table("accounts_by_id")) == 1)
        # keyed by order id: the lookup goes by the account_id field
        r.produce("orders", Order(account_id="a1", amount=1.0), key="o1")
        r.produce("orders", Order(account_id="nope", amount=2.0), key="o2")
        await r.idle()
        assert sorted(enriched(r)) == [
            ("o1", Enriched(account_id="a1", amount=1.0, tier="gold")),
            ("o2", Enriched(account_id="nope", amount=2.0, tier=None)),
        ]


async def test_later_orders_see_table_updates_and_a_null_value_deletes_the_row() -> None:
    async with Running(join_app(left=True), commit_interval=60.0) as r:
        table = "accounts_by_id"
        r.produce("accounts", Account(account_id="a1", tier="gold"), key="a1")
        await wait_for(lambda: "a1" in r.worker.table(table))
        r.produce("orders", Order(account_id="a1", amount=1.0), key="a1")
        await wait_for(lambda: len(r.messages("enriched")) == 1)
        r.produce("accounts", Account(account_id="a1", tier="platinum"), key="a1")
        await wait_for(lambda: r.worker.table(table)["a1"].tier == "platinum")
        r.produce("orders", Order(account_id="a1", amount=2.0), key="a1")
        await wait_for(lambda: len(r.messages("enriched")) == 2)
        r.produce("accounts", None, key="a1", raw=True)  # a tombstone
        await wait_for(lambda: r.worker.table(table) == {})
        r.produce("orders", Order(account_id="a1", amount=3.0), key="a1")
        await r.idle()
        assert [e.tier for _, e in enriched(r)] == ["gold", "platinum", None]
        # the tombstone was applied, not dead-lettered; the table's records are acked
        assert r.messages("shop-dlq") == []
        await r.worker.commit()
        assert sum(r.committed("accounts").values()) == 3


async def test_a_row_handed_downstream_is_a_copy_the_table_keeps_its_own() -> None:
    async with Running(join_app()) as r:
        r.produce("accounts", Account(account_id="a1", tier="gold"), key="a1")
        await wait_for(lambda: "a1" in r.worker.table("accounts_by_id"))
        r.produce("orders", Order(account_id="a1", amount=1.0), key="a1")
        await r.idle()
        row = r.worker.table("accounts_by_id")["a1"]
        assert row == Account(account_id="a1", tier="gold")


async def test_a_reassigned_partition_restores_the_table_from_its_topic() -> None:
    app = join_app()
    broker = MemoryBroker()
    for topic in app.topics.values():
        broker.create_topic(topic.name, topic.partitions, topic.config)
    a = Worker(app, MemoryTransport(broker, "shop"), stats_interval=0, revoke_timeout=0.05)
    b = Worker(app, MemoryTransport(broker, "shop"), stats_interval=0)
    await a.start()
    try:
        moved, kept = key_on(1), key_on(0)
        for key, tier in ((moved, "old"), (kept, "gold"), (moved, "silver")):
            account = msgspec.json.encode(Account(account_id=key, tier=tier))
            broker.produce("accounts", account, key.encode())
        await wait_for(lambda: a.table("accounts_by_id").get(moved, None) is not None)
        await wait_for(lambda: a.table("accounts_by_id")[moved].tier == "silver")
        await b.start()  # takes partition 1 of orders and accounts: restores store 1
        await wait_for(lambda: b.table("accounts_by_id") != {})
        assert b.table("accounts_by_id") == {moved: Account(account_id=moved, tier="silver")}
        assert a.table("accounts_by_id") == {kept: Account(account_id=kept, tier="gold")}
        for key in (moved, kept):
            order = msgspec.json.encode(Order(account_id=key, amount=1.0))
            broker.produce("orders", order, key.encode())
        await wait_for(lambda: len(broker.messages("enriched")) == 2)
        tiers = {
            (m.key or b"").decode(): msgspec.json.decode(m.value or b"", type=Enriched).tier
            for m in broker.messages("enriched")
        }
        assert tiers == {moved: "silver", kept: "gold"}
        await b.stop()  # partition 1 comes back to a: restored again, nothing lost
        await wait_for(lambda: moved in a.table("accounts_by_id"))
        update = msgspec.json.encode(Account(account_id=moved, tier="bronze"))
        broker.produce("accounts", update, moved.encode())
        await wait_for(lambda: a.table("accounts_by_id")[moved].tier == "bronze")
    finally:
        await b.stop()
        await a.stop()


class GatedReads(MemoryTransport):
    """Group-less reads of `topic` wait until `gate` is set."""

    def __init__(self, broker: MemoryBroker, group_id: str, topic: str) -> None:
        super().__init__(broker, group_id)
        self.topic = topic
        self.gate = asyncio.Event()

    async def read_partition(
        self, topic: str, partition: int, start: int
    ) -> AsyncIterator[Sequence[MemoryMessage]]:
        if topic == self.topic:
            await self.gate.wait()
        async for batch in super().read_partition(topic, partition, start):
            yield batch

    async def follow(
        self, topic: str, starts: Mapping[int, int]
    ) -> AsyncGenerator[Sequence[MemoryMessage], None]:
        if topic == self.topic:
            await self.gate.wait()
        async for batch in super().follow(topic, starts):
            yield batch


async def test_a_global_table_is_read_whole_before_the_first_join() -> None:
    # 3 account partitions, 2 order partitions: no co-partitioning needed
    app = join_app(global_=True, table_partitions=3)
    broker = MemoryBroker()
    for topic in app.topics.values():
        broker.create_topic(topic.name, topic.partitions, topic.config)
    keys = [f"a{i}" for i in range(12)]
    for i, key in enumerate(keys):
        account = msgspec.json.encode(Account(account_id=key, tier=f"t{i}"))
        broker.produce("accounts", account, key.encode())
    assert {partition_for_key(k.encode(), 3) for k in keys} == {0, 1, 2}
    transport = GatedReads(broker, "shop", "accounts")
    worker = Worker(app, transport, stats_interval=0)
    await worker.start()
    try:
        for key in keys:
            order = msgspec.json.encode(Order(account_id=key, amount=1.0))
            broker.produce("orders", order, key.encode())
        await asyncio.sleep(0.05)
        assert broker.messages("enriched") == []  # waiting for the table
        transport.gate.set()
        await wait_for(lambda: len(broker.messages("enriched")) == 12)
        tiers = {
            (m.key or b"").decode(): msgspec.json.decode(m.value or b"", type=Enriched).tier
            for m in broker.messages("enriched")
        }
        assert tiers == {key: f"t{i}" for i, key in enumerate(keys)}
        # and keeps following every partition
        broker.produce("accounts", msgspec.json.encode(Account(account_id="a0", tier="x")), b"a0")
        broker.produce("accounts", None, b"a1")
        await wait_for(
            lambda: worker.table("accounts_by_id").get("a0") == Account(account_id="a0", tier="x")
        )
        await wait_for(lambda: "a1" not in worker.table("accounts_by_id"))
    finally:
        await worker.stop()


class RecordingBroker(MemoryBroker):
    """Remembers the topic of every record produced, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.order: list[tuple[str, bytes | None]] = []

    def produce(
        self, topic: str, value: bytes | None, key: bytes | None = None, *args: Any, **kw: Any
    ) -> Any:
        self.order.append((topic, key))
        return super().produce(topic, value, key, *args, **kw)


async def test_streamc_run_produces_table_records_before_stream_records_of_the_same_time() -> None:
    from streamc_runtime.local import run_local

    orders = [
        {"key": "a1", "value": {"account_id": "a1", "amount": 1.0}, "timestamp": 1000},
        {"key": "a1", "value": {"account_id": "a1", "amount": 2.0}, "timestamp": 2000},
    ]
    accounts = [
        {"key": "a1", "value": {"account_id": "a1", "tier": "gold"}, "timestamp": 1000},
        {"key": "a2", "value": {"account_id": "a2", "tier": "gold"}, "timestamp": 1500},
    ]
    broker = RecordingBroker()
    await run_local(join_app(), [("orders", orders), ("accounts", accounts)], broker=broker)
    assert [o for o in broker.order if o[0] != "enriched"] == [
        ("accounts", b"a1"),
        ("orders", b"a1"),
        ("accounts", b"a2"),
        ("orders", b"a1"),
    ]
    tiers = [
        msgspec.json.decode(m.value or b"", type=Enriched).tier for m in broker.messages("enriched")
    ]
    assert tiers == ["gold", "gold"]


def test_an_ampersand_of_topics_is_a_merge_and_join_stays_its_alias() -> None:
    from streamc_runtime import App, Join, Merge

    app = App("shop")
    a = app.topic("a", key_type=str, value_type=Order)
    b = app.topic("b", key_type=str, value_type=Order)
    merged = a & b
    assert type(merged) is Merge and merged.topics == (a, b)
    assert Join is Merge
