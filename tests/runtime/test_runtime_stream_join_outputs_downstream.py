"""A stream join's outputs reach a stateful step further on, each once: an element's several
pairs, and unmatched elements closed together (by one element, or at the end of input), all
come from one element's position, which a later join or aggregation must not take for
replays of the first."""

from __future__ import annotations

import asyncio

import msgspec
from rtkit import Running
from streamc_runtime import App, Record, Stream
from streamc_runtime.local import until_quiescent
from streamc_runtime.state import Table
from streamjoinkit import WITHIN, Order, Paid, Payment, paid_of, produce, stream_join_app

POSITION = "streamc.position"


class Refund(Record, kw_only=True):
    order_id: str


class Unpaid(Record, kw_only=True):
    orders: int


class Count(Record, kw_only=True):
    orders: int = 0


async def settled(r: Running) -> None:
    await asyncio.wait_for(until_quiescent(r.worker), 5)


def refunded_app() -> App:
    """`from orders | join stream payments | process paid_of | join stream refunds`."""
    app = App("shop")
    orders = app.topic("orders", key_type=str, value_type=Order)
    payments = app.topic("payments", key_type=str, value_type=Payment)
    refunds = app.topic("refunds", key_type=str, value_type=Refund)
    refunded = app.topic("refunded", key_type=str, value_type=Paid)

    @app.agent(orders, name="refunded")
    async def refunded_payments(stream: Stream[Order]) -> None:
        paid = stream.join_stream(payments, within=WITHIN, value_type=Order).process(paid_of)
        joined = paid.join_stream(refunds, within=WITHIN, value_type=Paid)
        async for _ in joined.process(lambda pair: pair[0]).to(refunded):
            pass

    return app


async def test_every_pair_of_an_order_with_several_payments_meets_a_later_join() -> None:
    async with Running(refunded_app()) as r:
        produce(r.broker, "payments", Payment(order_id="o1", paid=1.0), "o1", 1000)
        produce(r.broker, "payments", Payment(order_id="o1", paid=2.0), "o1", 1500)
        produce(r.broker, "orders", Order(id="o1", amount=9.0), "o1", 2000)  # two pairs
        await settled(r)
        produce(r.broker, "refunds", Refund(order_id="o1"), "o1", 2500)
        await settled(r)
        assert sorted(p.paid for p in r.values("refunded", Paid)) == [1.0, 2.0]


def unpaid_app() -> App:
    """`from orders | left join stream payments | where payment == null | group_by "all" |
    aggregate unpaid { orders = count() } | to unpaid`."""
    app = App("shop")
    orders = app.topic("orders", key_type=str, value_type=Order)
    payments = app.topic("payments", key_type=str, value_type=Payment)
    repartition = app.topic(
        "shop-unpaid-repartition", key_type=str, value_type=Paid, internal=True, positions=True
    )
    unpaid = app.topic("unpaid", key_type=str, value_type=Unpaid)
    table: Table[str, Count] = app.table(
        "unpaid", key_type=str, value_type=Unpaid, state_type=Count, partitions=1
    )

    def fold(state: Count, _: Paid) -> Count:
        state.orders += 1
        return state

    @app.agent(orders, name="unpaid")
    async def unpaid_orders(stream: Stream[Order]) -> None:
        joined = stream.join_stream(payments, within=WITHIN, how="left", value_type=Order)
        rows = (
            joined.process(paid_of)
            .filter(lambda paid: paid.paid is None)
            .group_by(lambda _: "all", topic=repartition, returns=str)
            .aggregate(table, fold=fold, row=lambda _, state: Unpaid(orders=state.orders))
        )
        async for _ in rows.to(unpaid):
            pass

    return app


async def test_unpaid_orders_closed_together_are_each_counted_by_a_later_aggregate() -> None:
    async with Running(unpaid_app()) as r:
        for n in range(3):
            produce(r.broker, "orders", Order(id=f"o{n}", amount=1.0), f"o{n}", 1000)
        produce(r.broker, "orders", Order(id="o3", amount=1.0), "o3", 60_000)
        produce(r.broker, "orders", Order(id="o4", amount=1.0), "o4", 60_000)
        await settled(r)
        # o3 moved stream time past the three windows at once
        assert [u.orders for u in r.values("unpaid", Unpaid)] == [1, 2, 3]
        r.worker.request_close_windows()  # the end of input closes o3's and o4's together
        await settled(r)
        assert [u.orders for u in r.values("unpaid", Unpaid)] == [1, 2, 3, 4, 5]


async def test_unmatched_rows_an_element_closes_are_numbered_apart_from_its_pairs() -> None:
    # The order pairs with the payment at 1 and closes the two at 0 unmatched. Its replay
    # emits the pair again only while the order's entry is stored, so the closed rows cannot
    # follow the pair's number (`#1`, `#2`): they have their own, `#c0`, `#c1`.
    async with Running(stream_join_app("outer", grace=0)) as r:
        produce(r.broker, "payments", Payment(order_id="a", paid=0.0), "a", 0)
        produce(r.broker, "payments", Payment(order_id="a", paid=1.0), "a", 0)
        produce(r.broker, "payments", Payment(order_id="a", paid=2.0), "a", 1)
        produce(r.broker, "orders", Order(id="a", amount=3.0), "a", WITHIN + 1)
        await settled(r)
        rows = [
            (msgspec.json.decode(m.value or b"", type=Paid), dict(m.headers).get(POSITION))
            for m in r.broker.messages("paid")
        ]
        assert rows == [
            (Paid(id="a", amount=3.0, paid=2.0), None),  # the order's own position
            (Paid(id=None, amount=None, paid=0.0), b"orders:0#c0:0"),
            (Paid(id=None, amount=None, paid=1.0), b"orders:0#c1:0"),
        ]


def self_pairs_app() -> App:
    """`from orders | join stream orders | group_by "all" | aggregate pairs { n = count() }
    | to pairs`: both sides of the join read one topic, so an order's record on either side
    has the same offset."""
    app = App("shop")
    orders = app.topic("orders", key_type=str, value_type=Order)
    repartition = app.topic(
        "shop-pairs-repartition", key_type=str, value_type=Paid, internal=True, positions=True
    )
    pairs = app.topic("pairs", key_type=str, value_type=Unpaid)
    table: Table[str, Count] = app.table(
        "pairs", key_type=str, value_type=Unpaid, state_type=Count, partitions=1
    )

    def fold(state: Count, _: Paid) -> Count:
        state.orders += 1
        return state

    @app.agent(orders, name="pairs")
    async def self_pairs(stream: Stream[Order]) -> None:
        joined = stream.join_stream(orders, within=WITHIN, value_type=Order)
        rows = (
            joined.process(lambda p: Paid(id=p[0].id, amount=p[0].amount, paid=p[1].amount))
            .group_by(lambda _: "all", topic=repartition, returns=str)
            .aggregate(table, fold=fold, row=lambda _, state: Unpaid(orders=state.orders))
        )
        async for _ in rows.to(pairs):
            pass

    return app


async def test_every_pair_of_a_self_join_is_counted_by_a_later_aggregate() -> None:
    # The second order as the stream's element pairs with the first order's record of the
    # other side, and as the other side's record with the first order: two rows of one
    # offset, one of each side, which must not share a position.
    async with Running(self_pairs_app()) as r:
        produce(r.broker, "orders", Order(id="o1", amount=1.0), "o1", 1000)
        produce(r.broker, "orders", Order(id="o1", amount=2.0), "o1", 2000)
        await settled(r)
        assert [u.orders for u in r.values("pairs", Unpaid)] == [1, 2, 3, 4]
        positions = [dict(m.headers).get(POSITION) for m in r.messages("shop-pairs-repartition")]
        assert len(set(positions)) == 4, positions
