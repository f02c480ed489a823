"""Agent "paid_orders": from orders as order | join stream payments as payment within 5m grace 10s | where payment.order_id == order.id | select PaidOrder { id = order.id, account_id = order.account_id, amount = order.amount, paid = payment.amount } | to paid_orders"""

from streamc_runtime import Stream

from .. import topics
from ..app import app
from ..records import Order, PaidOrder, Payment


def paid_orders_where(pair: tuple[Order, Payment]) -> bool:
    """where payment.order_id == order.id"""
    order, payment = pair
    return payment.order_id == order.id


def select_paid_order(pair: tuple[Order, Payment]) -> PaidOrder:
    """select PaidOrder { id = order.id, account_id = order.account_id, amount = order.amount, paid = payment.amount }"""
    order, payment = pair
    return PaidOrder(
        id=order.id, account_id=order.account_id, amount=order.amount, paid=payment.amount
    )


@app.agent(topics.orders, name="paid_orders")
async def paid_orders(stream: Stream[Order]) -> None:
    async for run in stream.join_stream(
        topics.payments, within=300_000, grace=10_000, value_type=Order
    ).runs():
        for pair in run:
            if not paid_orders_where(pair):
                continue
            paid_order = select_paid_order(pair)
            run.send(topics.paid_orders, paid_order)
