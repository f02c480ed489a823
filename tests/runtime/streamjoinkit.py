"""A hand-written windowed stream-stream join app, as generated code would write it: orders
joined with payments by order id (`from orders | [left|outer] join stream payments ...`)."""

from __future__ import annotations

from typing import Any

import msgspec
from streamc_runtime import App, Record, Stream
from streamc_runtime.memory import MemoryBroker

WITHIN, GRACE = 5000, 1000


class Order(Record, kw_only=True):
    id: str
    amount: float


class Payment(Record, kw_only=True):
    order_id: str
    paid: float


class Paid(Record, kw_only=True):
    id: str | None
    amount: float | None
    paid: float | None


def paid_of(pair: tuple[Order | None, Payment | None]) -> Paid:
    order, payment = pair
    return Paid(
        id=None if order is None else order.id,
        amount=None if order is None else order.amount,
        paid=None if payment is None else payment.paid,
    )


def stream_join_app(
    how: str = "inner",
    *,
    partitions: int = 1,
    late: bool = False,
    grace: int = GRACE,
    name: str = "shop",
) -> App:
    app = App(name)
    orders = app.topic("orders", key_type=str, value_type=Order, partitions=partitions)
    payments = app.topic("payments", key_type=str, value_type=Payment, partitions=partitions)
    paid = app.topic("paid", key_type=str, value_type=Paid, partitions=partitions)
    late_orders = (
        app.topic("late_orders", key_type=str, value_type=Order, partitions=partitions)
        if late
        else None
    )

    @app.agent(orders, name="paid")
    async def paid_orders(stream: Stream[Order]) -> None:
        joined = stream.join_stream(
            payments, within=WITHIN, grace=grace, how=how, value_type=Order, late=late_orders
        )
        async for _ in joined.process(paid_of).to(paid):
            pass

    return app


def produce(broker: MemoryBroker, topic: str, value: Any, key: str, ts: int) -> None:
    broker.produce(topic, msgspec.json.encode(value), key.encode(), [], None, ts)


def paid_rows(broker: MemoryBroker) -> list[tuple[str | None, float | None, float | None]]:
    rows = [msgspec.json.decode(m.value or b"", type=Paid) for m in broker.messages("paid")]
    return [(p.id, p.amount, p.paid) for p in rows]
