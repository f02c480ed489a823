"""Tables stay exact across crashes at any point: between a fold, its changelog record, the
publish of its row and the commit. A crash is a transport that dies at a random record: from
then on nothing it is asked to store is stored and nothing is committed (a SIGKILL, as seen
from the broker); the next worker takes over from the committed offsets."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rtkit import Order
from statekit import AccountTotals, exact, totals_app
from streamc_runtime.local import until_idle
from streamc_runtime.memory import MemoryBroker, MemoryTransport
from streamc_runtime.state import table_rows
from streamc_runtime.transport import Delivery, TopicSpec
from streamc_runtime.worker import Worker

PARTITIONS = 3


class DyingTransport(MemoryTransport):
    """Stores `budget` records, then is dead: sends fail unstored, commits are lost."""

    def __init__(self, broker: MemoryBroker, group_id: str, budget: int) -> None:
        super().__init__(broker, group_id)
        self.budget = budget

    async def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
        partition: int | None = None,
        timestamp: int | None = None,
    ) -> asyncio.Future[Delivery]:
        if self.budget <= 0:
            raise RuntimeError("crashed")  # not transient: the worker stops at once
        self.budget -= 1
        return await super().send(topic, value, key, headers, partition, timestamp)

    async def commit(self, offsets: Any) -> None:
        if self.budget > 0:
            await super().commit(offsets)

    async def ensure_topics(self, specs: Sequence[TopicSpec]) -> None:
        await super().ensure_topics(specs)


async def _run(app: Any, transport: MemoryTransport) -> None:
    worker = Worker(app,
        transport, stats_interval=0, commit_interval=0.002, send_attempts=1, shutdown_timeout=0.5
    )
    await worker.start()
    try:
        await asyncio.wait_for(until_idle(worker), 10)
    finally:
        await worker.stop()


async def _scenario(
    budgets: list[int], items: list[tuple[str, int, Order]], fused: bool = False
) -> None:
    app = totals_app(PARTITIONS, merge=True, fused=fused)
    broker = MemoryBroker()
    for topic in app.topics.values():
        broker.create_topic(topic.name, topic.partitions, topic.config)
    for topic, partition, order in items:
        broker.produce(topic, msgspec.json.encode(order), order.account_id.encode(), (), partition)
    for budget in budgets:
        await _run(app, DyingTransport(broker, "shop", budget))
    await _run(app, MemoryTransport(broker, "shop"))
    want = exact(order for _, _, order in items)
    assert table_rows(broker, app.tables["totals"]) == want
    last: dict[str, AccountTotals] = {}
    for m in broker.messages("account_totals"):  # a key's updates all sit on one partition
        last[(m.key or b"").decode()] = msgspec.json.decode(m.value or b"", type=AccountTotals)
    assert last == want


_items = st.lists(
    st.tuples(
        st.sampled_from(["orders", "refunds"]),
        st.integers(0, PARTITIONS - 1),
        st.builds(
            Order,
            account_id=st.sampled_from(["a", "b", "c", "d"]),
            amount=st.integers(-5, 50).map(float),
        ),
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    items=_items,
    budgets=st.lists(st.integers(0, 200), min_size=1, max_size=3),
    fused=st.booleans(),  # a fused loop reads the aggregate: its input comes in chunks
)
def test_tables_and_last_published_rows_are_exact_after_crashes_at_any_record(
    items: list[tuple[str, int, Order]], budgets: list[int], fused: bool
) -> None:
    asyncio.run(_scenario(budgets, items, fused))
