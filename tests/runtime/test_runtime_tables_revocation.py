"""Tables across revocations: an aggregation never waits for ever on a store that left with
its partition, and never writes a revoked store's changelog (or publishes its rows) after
the store is closed, since the new owner writes there meanwhile."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import msgspec
import pytest
from rtkit import Order, wait_for
from statekit import AccountTotals, TotalsState, by_account, row, totals_app
from streamc_runtime import App, Stream, Worker
from streamc_runtime.local import until_idle
from streamc_runtime.memory import MemoryBroker, MemoryMessage, MemoryTransport, partition_for_key
from streamc_runtime.state import Table, table_rows
from streamc_runtime.state.changelog import POSITIONS_KEY

CHANGELOG = "shop-totals-changelog"
REPARTITION = "shop-totals-orders-account_id-repartition"


def key_on(partition: int, partitions: int = 2) -> str:
    return next(
        k
        for k in (f"acc{i}" for i in range(100))
        if partition_for_key(k.encode(), partitions) == partition
    )


def last_published(broker: MemoryBroker) -> dict[str, AccountTotals]:
    out = {}
    for m in broker.messages("account_totals"):
        out[(m.key or b"").decode()] = msgspec.json.decode(m.value or b"", type=AccountTotals)
    return out


def broker_for(app: App) -> MemoryBroker:
    broker = MemoryBroker()
    for topic in app.topics.values():
        broker.create_topic(topic.name, topic.partitions, topic.config)
    return broker


class SlowRestoreTransport(MemoryTransport):
    """Restores of the changelog partitions in `slow` wait until `gate` is set."""

    def __init__(self, broker: MemoryBroker, group_id: str, slow: set[int]) -> None:
        super().__init__(broker, group_id)
        self.slow = slow
        self.gate = asyncio.Event()

    async def read_partition(
        self, topic: str, partition: int, start: int
    ) -> AsyncIterator[Sequence[MemoryMessage]]:
        if partition in self.slow:
            await self.gate.wait()
        async for batch in super().read_partition(topic, partition, start):
            yield batch


@pytest.mark.parametrize("fused", [False, True], ids=["to", "fused loop"])
async def test_an_element_waiting_for_a_store_revoked_mid_restore_does_not_stall_the_rest(
    fused: bool,
) -> None:
    app = totals_app(partitions=2, fused=fused)
    broker = broker_for(app)
    a_transport = SlowRestoreTransport(broker, "shop", slow={1})
    a = Worker(app, a_transport, stats_interval=0, commit_interval=60.0, revoke_timeout=0.05)
    await a.start()
    b = Worker(app, MemoryTransport(broker, "shop"), stats_interval=0, commit_interval=60.0)
    try:
        kept, moved = key_on(0), key_on(1)
        broker.produce("orders", msgspec.json.encode(Order(account_id=moved, amount=1.0)), None)
        # the element of partition 1 reaches the aggregation and waits for store 1's restore
        await wait_for(lambda: len(broker.messages(REPARTITION, 1)) == 1)
        await asyncio.sleep(0.05)
        await b.start()  # takes partition 1: a cancels that restore
        await wait_for(lambda: {tp.partition for tp in a_transport.assignment()} == {0})
        for i in range(3):
            order = Order(account_id=kept, amount=float(i))
            broker.produce("orders", msgspec.json.encode(order), None, (), 0)
        await wait_for(
            lambda: (
                a.table("totals") == {kept: AccountTotals(account_id=kept, orders=3, amount=3.0)}
            ),
            within=2.0,
        )
        await wait_for(
            lambda: (
                b.table("totals") == {moved: AccountTotals(account_id=moved, orders=1, amount=1.0)}
            ),
            within=2.0,
        )
    finally:
        await b.stop()
        await a.stop()


def blocking_app(gate: asyncio.Event, blocked: asyncio.Event) -> App:
    """`totals_app` with an async fold that waits for `gate` the first time it folds an order
    of amount 999 (a slow reduce hook)."""
    app = App("shop")
    orders = app.topic("orders", key_type=str, value_type=Order, partitions=2)
    repartition = app.topic(
        REPARTITION, key_type=str, value_type=Order, partitions=2, internal=True, positions=True
    )
    published = app.topic("account_totals", key_type=str, value_type=AccountTotals, partitions=2)
    table: Table[str, TotalsState] = app.table(
        "totals", key_type=str, value_type=AccountTotals, state_type=TotalsState, partitions=2
    )

    async def fold(state: TotalsState, order: Order) -> TotalsState:
        if order.amount == 999.0 and not blocked.is_set():
            blocked.set()
            await gate.wait()
        state.orders += 1
        state.amount += order.amount
        return state

    @app.agent(orders, name="totals")
    async def totals(stream: Stream[Order]) -> None:
        async for _ in (
            stream.group_by(by_account, topic=repartition, returns=str)
            .aggregate(table, fold=fold, row=row)
            .to(published)
        ):
            pass

    return app


async def test_a_run_folded_before_its_store_was_revoked_writes_no_changelog_after_it() -> None:
    gate, blocked = asyncio.Event(), asyncio.Event()
    app = blocking_app(gate, blocked)
    broker = broker_for(app)
    a_transport = MemoryTransport(broker, "shop")
    a = Worker(app, a_transport, stats_interval=0, commit_interval=60.0, revoke_timeout=0.05)
    await a.start()
    b = Worker(app, MemoryTransport(broker, "shop"), stats_interval=0, commit_interval=60.0)
    k = key_on(1)

    def order(amount: float) -> bytes:
        return msgspec.json.encode(Order(account_id=k, amount=amount))

    try:
        await until_idle(a)
        # one run on table partition 1: x is folded, then the fold of z waits (a slow hook)
        broker.produce(REPARTITION, order(1.0), k.encode(), (), 1)
        broker.produce(REPARTITION, order(999.0), k.encode(), (), 1)
        await asyncio.wait_for(blocked.wait(), 2)
        await b.start()  # takes partition 1 once a gives up waiting for the run
        await wait_for(lambda: {tp.partition for tp in a_transport.assignment()} == {0})
        broker.produce(REPARTITION, order(5.0), k.encode(), (), 1)
        want = {k: AccountTotals(account_id=k, orders=3, amount=1005.0)}
        await wait_for(lambda: b.table("totals") == want)
        gate.set()  # the old run of a goes on: its partition is gone
        await until_idle(a)
        await until_idle(b)
    finally:
        gate.set()
        await b.stop()
        await a.stop()
    assert table_rows(broker, app.tables["totals"]) == want
    assert last_published(broker) == want


class CountingTransport(MemoryTransport):
    """Counts the changelog records each restore reads, per partition."""

    def __init__(self, broker: MemoryBroker, group_id: str) -> None:
        super().__init__(broker, group_id)
        self.read: dict[int, int] = {}

    async def read_partition(
        self, topic: str, partition: int, start: int
    ) -> AsyncIterator[Sequence[MemoryMessage]]:
        async for batch in super().read_partition(topic, partition, start):
            self.read[partition] = self.read.get(partition, 0) + len(batch)
            yield batch


def orders_for(keys: list[str], n: int, start: int = 0) -> list[Order]:
    return [Order(account_id=keys[i % len(keys)], amount=float(i)) for i in range(start, n)]


@pytest.mark.parametrize("fused", [False, True], ids=["to", "fused loop"])
async def test_a_memory_store_assigned_back_reads_only_what_others_wrote_after_it(
    fused: bool,
) -> None:
    app = totals_app(partitions=2, fused=fused)
    broker = broker_for(app)
    a_transport = CountingTransport(broker, "shop")
    a = Worker(app, a_transport, stats_interval=0, commit_interval=60.0)
    keys = [key_on(0), key_on(1)]
    sent: list[Order] = []

    def produce(items: list[Order]) -> None:
        for o in items:
            broker.produce("orders", msgspec.json.encode(o), o.account_id.encode())
        sent.extend(items)

    await a.start()
    try:
        produce(orders_for(keys, 40))
        await until_idle(a)
        assert a_transport.read == {}  # both changelog partitions were empty
        # aiokafka's rebalance: every partition revoked, the same assigned back
        everything = a_transport.assignment()
        await a.on_partitions_revoked(everything)
        await a.on_partitions_assigned(everything)
        await until_idle(a)
        assert a_transport.read == {}  # both stores kept: nothing to read again
        # partition 1 moves to b, which writes its changelog, then comes back
        b = Worker(app, MemoryTransport(broker, "shop"), stats_interval=0, commit_interval=60.0)
        await b.start()
        await wait_for(lambda: {tp.partition for tp in a_transport.assignment()} == {0})
        before = len(broker.messages(CHANGELOG, 1))
        produce(orders_for(keys, 50, start=40))
        await until_idle(a)
        await until_idle(b)
        written_by_b = len(broker.messages(CHANGELOG, 1)) - before
        assert written_by_b > 0
        await b.stop()
        await wait_for(lambda: {tp.partition for tp in a_transport.assignment()} == {0, 1})
        produce(orders_for(keys, 60, start=50))
        await until_idle(a)
        assert a_transport.read == {1: written_by_b}
        want = {
            k: AccountTotals(
                account_id=k,
                orders=sum(1 for o in sent if o.account_id == k),
                amount=sum(o.amount for o in sent if o.account_id == k),
            )
            for k in keys
        }
        assert a.table("totals") == want
    finally:
        await a.stop()
    assert table_rows(broker, app.tables["totals"]) == want


async def test_a_run_spanning_two_partitions_drops_only_the_revoked_ones_folds() -> None:
    gate, blocked = asyncio.Event(), asyncio.Event()
    app = blocking_app(gate, blocked)
    broker = broker_for(app)
    a_transport = MemoryTransport(broker, "shop")
    a = Worker(app, a_transport, stats_interval=0, commit_interval=60.0, revoke_timeout=0.05)
    await a.start()
    b = Worker(app, MemoryTransport(broker, "shop"), stats_interval=0, commit_interval=60.0)
    k0, k1 = key_on(0), key_on(1)

    def order(key: str, amount: float) -> bytes:
        return msgspec.json.encode(Order(account_id=key, amount=amount))

    try:
        await until_idle(a)
        broker.produce(REPARTITION, order(k0, 1.0), k0.encode(), (), 0)
        await until_idle(a)  # the next fetch starts its turns at partition 1
        # one run taken from the buffer: k1's order (partition 1) is folded, then the fold of
        # k0's (partition 0) waits, a slow hook, while partition 1 moves to b
        broker.produce(REPARTITION, order(k0, 999.0), k0.encode(), (), 0)
        broker.produce(REPARTITION, order(k1, 2.0), k1.encode(), (), 1)
        await asyncio.wait_for(blocked.wait(), 2)
        assert [m.key for m in broker.messages(CHANGELOG, 1)] == []
        await b.start()
        await wait_for(lambda: {tp.partition for tp in a_transport.assignment()} == {0})
        want_b = {k1: AccountTotals(account_id=k1, orders=1, amount=2.0)}
        await wait_for(lambda: b.table("totals") == want_b)
        gate.set()  # a's run goes on: what it folded into store 1 is neither sent nor published
        want_a = {k0: AccountTotals(account_id=k0, orders=2, amount=1000.0)}
        await wait_for(lambda: a.table("totals") == want_a)
        await until_idle(a)
        await until_idle(b)
    finally:
        gate.set()
        await b.stop()
        await a.stop()
    assert table_rows(broker, app.tables["totals"]) == {**want_a, **want_b}
    # partition 1's changelog: b's record and skip map only, none of a's run
    assert [m.key for m in broker.messages(CHANGELOG, 1)] == [k1.encode(), POSITIONS_KEY]
    assert [m.key for m in broker.messages("account_totals") if m.key == k1.encode()] == [
        k1.encode()
    ]
    assert last_published(broker) == {**want_a, **want_b}
