"""Windowed stream-stream joins on the memory transport: inner, left and outer pairs, out of
order arrival, late records, and the buffers restored from their changelog."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from rtkit import Running, wait_for
from streamc_runtime import App, Stream
from streamc_runtime.local import until_quiescent
from streamc_runtime.memory import MemoryBroker, partition_for_key
from streamc_runtime.state.stream_join import split_entry
from streamjoinkit import GRACE, WITHIN, Order, Payment, paid_rows, produce, stream_join_app


async def settled(r: Running) -> None:
    """Until everything fed in is handled (the other topic's records held for the stream's
    are released when nothing else moves, as `streamc run` does)."""
    await asyncio.wait_for(until_quiescent(r.worker), 5)


async def _close(r: Running) -> None:
    r.worker.request_close_windows()
    await settled(r)


async def test_an_inner_join_pairs_records_within_the_window_whatever_side_comes_first() -> None:
    async with Running(stream_join_app()) as r:
        produce(r.broker, "orders", Order(id="o1", amount=10.0), "o1", 1000)
        produce(r.broker, "payments", Payment(order_id="o1", paid=10.0), "o1", 3000)
        # the payment first, the order 5 s later: still within
        produce(r.broker, "payments", Payment(order_id="o2", paid=2.0), "o2", 4000)
        produce(r.broker, "orders", Order(id="o2", amount=2.0), "o2", 9000)
        # 5.001 s apart: no pair
        produce(r.broker, "orders", Order(id="o3", amount=3.0), "o3", 10_000)
        produce(r.broker, "payments", Payment(order_id="o3", paid=3.0), "o3", 15_001)
        await settled(r)
        assert sorted(paid_rows(r.broker)) == [("o1", 10.0, 10.0), ("o2", 2.0, 2.0)]
        stamps = sorted(m.timestamp for m in r.messages("paid"))
        assert stamps == [3000, 9000]  # the later element's time
        await _close(r)
        assert len(r.messages("paid")) == 2  # inner: nothing for the unmatched


async def test_every_partner_within_the_window_makes_a_pair() -> None:
    async with Running(stream_join_app()) as r:
        produce(r.broker, "orders", Order(id="o1", amount=1.0), "o1", 1000)
        produce(r.broker, "orders", Order(id="o1", amount=2.0), "o1", 2000)
        produce(r.broker, "payments", Payment(order_id="o1", paid=5.0), "o1", 1500)
        produce(r.broker, "payments", Payment(order_id="o1", paid=6.0), "o1", 6500)
        await settled(r)
        assert sorted(paid_rows(r.broker)) == [
            ("o1", 1.0, 5.0),
            ("o1", 2.0, 5.0),
            ("o1", 2.0, 6.0),  # 6500 - 1000 > 5000: no (1.0, 6.0)
        ]


async def test_a_left_join_emits_an_unmatched_order_once_when_its_window_closes() -> None:
    async with Running(stream_join_app("left")) as r:
        produce(r.broker, "orders", Order(id="o1", amount=1.0), "o1", 1000)
        produce(r.broker, "orders", Order(id="o2", amount=2.0), "o2", 1000)
        produce(r.broker, "payments", Payment(order_id="o2", paid=2.0), "o2", 2000)
        # stream time 7000 = 1000 + within + grace: o1's window is not closed yet
        produce(r.broker, "payments", Payment(order_id="x", paid=0.0), "x", 1000 + WITHIN + GRACE)
        await settled(r)
        assert paid_rows(r.broker) == [("o2", 2.0, 2.0)]
        produce(r.broker, "payments", Payment(order_id="y", paid=0.0), "y", 7001)
        await settled(r)
        assert paid_rows(r.broker) == [("o2", 2.0, 2.0), ("o1", 1.0, None)]
        assert r.messages("paid")[1].timestamp == 1000
        await _close(r)
        # unmatched payments are not emitted by a left join; o1 is not emitted again
        assert paid_rows(r.broker) == [("o2", 2.0, 2.0), ("o1", 1.0, None)]


async def test_an_outer_join_emits_unmatched_records_of_both_sides_at_the_end_of_input() -> None:
    async with Running(stream_join_app("outer")) as r:
        produce(r.broker, "orders", Order(id="o1", amount=1.0), "o1", 1000)
        produce(r.broker, "payments", Payment(order_id="p1", paid=9.0), "p1", 1200)
        produce(r.broker, "orders", Order(id="o2", amount=2.0), "o2", 1300)
        produce(r.broker, "payments", Payment(order_id="o2", paid=2.0), "o2", 1400)
        await settled(r)
        assert paid_rows(r.broker) == [("o2", 2.0, 2.0)]
        await _close(r)
        assert sorted(paid_rows(r.broker), key=str) == sorted(
            [("o2", 2.0, 2.0), ("o1", 1.0, None), (None, None, 9.0)], key=str
        )


async def test_a_record_more_than_grace_behind_stream_time_is_late() -> None:
    async with Running(stream_join_app("left", late=True)) as r:
        produce(r.broker, "orders", Order(id="o1", amount=1.0), "o1", 20_000)
        await settled(r)  # stream time 20 s
        produce(r.broker, "payments", Payment(order_id="o1", paid=1.0), "o1", 20_000 - GRACE)
        produce(r.broker, "payments", Payment(order_id="o1", paid=2.0), "o1", 20_000 - GRACE - 1)
        produce(r.broker, "orders", Order(id="o1", amount=3.0), "o1", 20_000 - GRACE - 1)
        await settled(r)
        # the payment just within grace pairs; the one a ms later is dead-lettered as late,
        # the late order goes to the `late` topic
        assert paid_rows(r.broker) == [("o1", 1.0, 1.0)]
        dlq = r.messages("shop-dlq")
        assert [dict(m.headers)["streamc.error.type"] for m in dlq] == [b"late"]
        assert [
            (dict(m.headers)["streamc.source.topic"], dict(m.headers)["streamc.source.offset"])
            for m in dlq
        ] == [(b"payments", b"1")]
        assert [m.value for m in r.messages("late_orders")] == [r.messages("orders")[1].value]
        await r.worker.commit()
        assert r.committed("orders") == {0: 2} and r.committed("payments") == {0: 2}


async def test_late_elements_of_a_merged_stream_go_to_the_late_topic() -> None:
    async with Running(stream_join_app("left", late=True, merged=True)) as r:
        produce(r.broker, "orders", Order(id="o1", amount=1.0), "o1", 20_000)
        await settled(r)  # stream time 20 s
        produce(r.broker, "reorders", Order(id="o2", amount=2.0), "o2", 20_000 - GRACE - 1)
        produce(r.broker, "orders", Order(id="o3", amount=3.0), "o3", 20_000 - GRACE - 1)
        produce(r.broker, "payments", Payment(order_id="o1", paid=2.0), "o1", 20_000 - GRACE - 1)
        await settled(r)
        # the stream's own late elements, from either merged topic; the other topic's late
        # record is dead-lettered
        late = sorted(m.value or b"" for m in r.messages("late_orders"))
        assert late == sorted([r.messages("reorders")[0].value, r.messages("orders")[1].value])
        dlq = r.messages("shop-dlq")
        assert [dict(m.headers)["streamc.source.topic"] for m in dlq] == [b"payments"]


async def test_a_stream_joined_with_its_own_topic_pairs_every_two_records_within() -> None:
    app = App("shop")
    orders = app.topic("orders", key_type=str, value_type=Order)
    pairs = app.topic("pairs", key_type=str, value_type=list[float])

    @app.agent(orders, name="pairs")
    async def self_join(stream: Stream[Order]) -> None:
        joined = stream.join_stream(orders, within=WITHIN, value_type=Order)
        async for _ in joined.process(lambda p: [p[0].amount, p[1].amount]).to(pairs):
            pass

    async with Running(app) as r:
        produce(r.broker, "orders", Order(id="o1", amount=1.0), "o1", 1000)
        produce(r.broker, "orders", Order(id="o1", amount=2.0), "o1", 2000)
        await settled(r)
        assert sorted(r.values("pairs")) == [[1.0, 1.0], [1.0, 2.0], [2.0, 1.0], [2.0, 2.0]]
        await r.worker.commit()
        assert r.committed("orders") == {0: 2}


async def test_the_buffers_are_restored_from_the_changelog_by_the_next_worker() -> None:
    broker = MemoryBroker()
    async with Running(stream_join_app("left"), broker) as r:
        produce(broker, "orders", Order(id="o1", amount=1.0), "o1", 1000)
        produce(broker, "orders", Order(id="o2", amount=2.0), "o2", 1000)
        produce(broker, "payments", Payment(order_id="o2", paid=2.0), "o2", 2000)
        await settled(r)
        await r.worker.commit()
    assert paid_rows(broker) == [("o2", 2.0, 2.0)]
    async with Running(stream_join_app("left"), broker) as r:
        produce(broker, "payments", Payment(order_id="o1", paid=1.0), "o1", 3000)
        produce(broker, "payments", Payment(order_id="o2", paid=5.0), "o2", 3000)
        await settled(r)
        # o1 and o2 came back from the changelog: new pairs, o2 marked matched so the left
        # join does not emit it unmatched at the end; nothing from before is emitted again
        assert paid_rows(broker) == [("o2", 2.0, 2.0), ("o1", 1.0, 1.0), ("o2", 2.0, 5.0)]
        await _close(r)
        assert len(r.messages("paid")) == 3


def key_on(partition: int, partitions: int = 2) -> str:
    keys = (f"o{i}" for i in range(1000))
    return next(k for k in keys if partition_for_key(k.encode(), partitions) == partition)


async def test_a_partition_moved_to_another_worker_joins_there_with_its_restored_buffers() -> None:
    broker = MemoryBroker()
    app = stream_join_app("left", partitions=2)
    k0, k1 = key_on(0), key_on(1)
    async with Running(app, broker) as a:
        produce(broker, "orders", Order(id=k0, amount=1.0), k0, 1000)
        produce(broker, "orders", Order(id=k1, amount=2.0), k1, 1000)
        await settled(a)
        await a.worker.commit()
        async with Running(app, broker) as b:
            # the group rebalances: each worker holds one partition of both topics
            await wait_for(lambda: len(b.transport.assignment()) == 2, 10)
            await wait_for(lambda: len(a.transport.assignment()) == 2, 10)
            assert {tp.partition for tp in a.transport.assignment()} != {
                tp.partition for tp in b.transport.assignment()
            }
            produce(broker, "payments", Payment(order_id=k0, paid=1.0), k0, 2000)
            produce(broker, "payments", Payment(order_id=k1, paid=2.0), k1, 2000)
            await settled(a)
            await settled(b)
            for r in (a, b):
                r.worker.request_close_windows()
            await settled(a)
            await settled(b)
    # the moved partition's order came back from the changelog and met its payment there;
    # none is emitted unmatched, none twice
    assert sorted(paid_rows(broker)) == [(k0, 1.0, 1.0), (k1, 2.0, 2.0)]


async def test_the_buffers_come_back_from_a_rocksdb_checkpoint(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker = MemoryBroker()
    async with Running(stream_join_app("left"), broker, state_dir=tmp_path) as r:
        produce(broker, "orders", Order(id="o1", amount=1.0), "o1", 1000)
        produce(broker, "orders", Order(id="o2", amount=2.0), "o2", 1000)
        produce(broker, "payments", Payment(order_id="o2", paid=2.0), "o2", 2000)
        await settled(r)
    assert (tmp_path / "shop" / "paid-join-1" / "0").is_dir()
    caplog.set_level(logging.INFO, logger="streamc")
    async with Running(stream_join_app("left"), broker, state_dir=tmp_path) as r:
        produce(broker, "payments", Payment(order_id="o1", paid=1.0), "o1", 3000)
        await settled(r)
        await _close(r)
    # read from the checkpoint, nothing from the changelog: o1 waited there, o2 was matched
    assert any(m.startswith("restored table paid-join-1[0]: 0 records") for m in caplog.messages)
    assert paid_rows(broker) == [("o2", 2.0, 2.0), ("o1", 1.0, 1.0)]


async def test_entries_closed_without_a_row_are_tombstoned_and_committed_with_no_more_input() -> (
    None
):
    async with Running(stream_join_app("outer", grace=0)) as r:
        produce(r.broker, "orders", Order(id="a", amount=1.0), "a", 0)
        produce(r.broker, "payments", Payment(order_id="a", paid=1.0), "a", 0)
        await settled(r)
        # stream time 6000 closes the matched pair's two entries: no row goes out for them,
        # and nothing else comes in that would make the agent pull again
        produce(r.broker, "payments", Payment(order_id="b", paid=2.0), "b", 6000)
        changelog = "shop-paid-join-1-changelog"
        await wait_for(lambda: sum(m.value is None for m in r.messages(changelog)) == 2, 2.0)
        gone = sorted(m.key or b"" for m in r.messages(changelog) if m.value is None)
        assert [split_entry(k)[::2] for k in gone] == [(b"L", b"a"), (b"R", b"a")]
        assert await r.worker.commit()
        assert r.committed("payments") == {0: 2}  # the closing payment is done
        assert sorted(paid_rows(r.broker)) == [("a", 1.0, 1.0)]
