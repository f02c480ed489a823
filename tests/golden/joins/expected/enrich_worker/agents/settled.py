"""Agent "settled": from orders as order | left join stream payments as payment within 5m grace 30s late to late_orders | select Settled { id = order.id, amount = order.amount, paid = payment.amount } | to settled"""

from streamc_runtime import Stream

from .. import topics
from ..app import app
from ..records import Order, Payment, Settled


def select_settled(pair: tuple[Order, Payment | None]) -> Settled:
    """select Settled { id = order.id, amount = order.amount, paid = payment.amount }"""
    order, payment = pair
    return Settled(
        id=order.id, amount=order.amount, paid=(None if payment is None else payment.amount)
    )


@app.agent(topics.orders, name="settled")
async def settled(stream: Stream[Order]) -> None:
    async for run in stream.join_stream(
        topics.payments,
        within=300_000,
        grace=30_000,
        how="left",
        value_type=Order,
        late=topics.late_orders,
    ).runs():
        for pair in run:
            value = select_settled(pair)
            run.send(topics.settled, value)
