"""An `aggregate` read by a fused loop (`runs()`, as generated code reads it) takes its input
from the repartition topic in chunks: no offsets entry per message, one hold per chunk until
the run's changelog records are delivered, and one release per chunk when the loop is done
with them; an element the fold fails on is dead-lettered on its own, and no commit passes an
element whose changelog record or dead letter is not delivered."""

from __future__ import annotations

import asyncio

import pytest
from rtkit import Order, Running, gated, release_topic, spy_acks
from statekit import AccountTotals, TotalsState, row
from streamc_runtime import App, Stream
from streamc_runtime.transport import TP

REPARTITION = "shop-totals-orders-account_id-repartition"


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def _app(seen: list[AccountTotals]) -> App:
    app = App("shop")
    orders = app.topic("orders", key_type=str, value_type=Order, partitions=1)
    repartition = app.topic(
        REPARTITION, key_type=str, value_type=Order, partitions=1, internal=True, positions=True
    )
    table = app.table(
        "totals", key_type=str, value_type=AccountTotals, state_type=TotalsState, partitions=1
    )

    def fold(state: TotalsState, order: Order) -> TotalsState:
        if order.amount < 0:
            raise ValueError("negative amount")
        state.orders += 1
        state.amount += order.amount
        return state

    @app.agent(orders, name="totals")
    async def totals(stream: Stream[Order]) -> None:
        rows = stream.group_by(lambda o: o.account_id, topic=repartition, returns=str)
        async for run in rows.aggregate(table, fold=fold, row=row).runs():
            for total in run:
                seen.append(total)

    return app


async def test_an_aggregate_over_chunks_holds_each_chunk_until_its_changelog_is_delivered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[AccountTotals] = []
    r = gated(_app(seen), ["shop-totals-changelog", "shop-dlq"])
    amounts = [1.0, 2.0, 3.0, -1.0, 4.0, 5.0]  # the fold fails on the 4th (offset 3)
    for amount in amounts:
        r.produce("orders", Order(account_id="a", amount=amount), key="a")
    acks = spy_acks(monkeypatch)
    async with r:
        await r.idle()
        state = r.worker.offsets.get(TP(REPARTITION, 0))
        assert [(t.orders, t.amount) for t in seen] == [
            (1, 1.0), (2, 3.0), (3, 6.0), (4, 10.0), (5, 15.0),
        ]  # fmt: skip
        # Read back as one chunk: its changelog holds its entry once, the loop's ack is one
        # release of its 5 members, the dead letter's hold is on offset 3 alone.
        assert acks[REPARTITION, "release"] == 0
        assert acks[REPARTITION, "hold"] == 2
        assert acks[REPARTITION, "release_members"] == 2  # the dead letter's, the loop's
        assert state.committable() == 0
        assert await r.worker.commit()
        assert r.committed(REPARTITION) == {0: 0}

        release_topic(r, "shop-totals-changelog")
        await _settle()
        assert acks[REPARTITION, "release"] == 1  # the chunk's hold, on delivery
        assert state.committable() == 3  # the dead letter holds its element alone
        assert await r.worker.commit()
        assert r.committed(REPARTITION) == {0: 3}

        release_topic(r, "shop-dlq")
        await _settle()
        assert state.committable() == 6
        assert await r.worker.commit()
        assert r.committed(REPARTITION) == {0: 6}
        assert r.committed("orders") == {0: 6}
    (dead,) = r.messages("shop-dlq")
    headers = dict(dead.headers)
    assert headers["streamc.source.topic"] == REPARTITION.encode()
    assert headers["streamc.source.offset"] == b"3"
    assert headers["streamc.error"] == b"negative amount"


async def test_a_stop_mid_run_commits_the_rows_handled_and_not_those_dropped() -> None:
    # The loop waits in its body on the 4th row when the worker stops: the rows after it
    # are dropped unhandled (the next owner folds them again, a replay), the four handled
    # are committed, as they would have been element by element.
    app = App("shop")
    orders = app.topic("orders", key_type=str, value_type=Order, partitions=1)
    repartition = app.topic(
        REPARTITION, key_type=str, value_type=Order, partitions=1, internal=True, positions=True
    )
    table = app.table(
        "totals", key_type=str, value_type=AccountTotals, state_type=TotalsState, partitions=1
    )
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    seen: list[float] = []

    def fold(state: TotalsState, order: Order) -> TotalsState:
        state.orders += 1
        state.amount += order.amount
        return state

    @app.agent(orders, name="totals")
    async def totals(stream: Stream[Order]) -> None:
        rows = stream.group_by(lambda o: o.account_id, topic=repartition, returns=str)
        async for run in rows.aggregate(table, fold=fold, row=row).runs():
            for total in run:
                seen.append(total.amount)
                if total.orders == 4:
                    await gate

    r = Running(app)
    for amount in range(1, 11):
        r.produce("orders", Order(account_id="a", amount=float(amount)), key="a")
    async with r:
        for _ in range(2000):
            if len(seen) == 4:
                break
            await asyncio.sleep(0.005)
        stopping = asyncio.ensure_future(r.worker.stop())
        await asyncio.sleep(0.05)
        gate.set_result(None)
        await stopping
    assert seen == [1.0, 3.0, 6.0, 10.0]
    assert r.committed(REPARTITION) == {0: 4}
