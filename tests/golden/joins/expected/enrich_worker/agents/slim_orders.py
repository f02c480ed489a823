"""Agent "slim_orders": from orders as order | where order.amount > 0.0 | select Slim { id = order.id, total = amount * 1.2, units = quantity, country = order.customer.country, large = amount >= 100.0 } | to slim_orders"""

from streamc_runtime import Stream

from .. import topics
from ..app import app
from ..records import Order, Slim


def slim_orders_where(order: Order) -> bool:
    """where order.amount > 0.0"""
    return order.amount > 0.0


def select_slim(order: Order) -> Slim:
    """select Slim { id = order.id, total = amount * 1.2, units = quantity, country = order.customer.country, large = amount >= 100.0 }"""
    return Slim(
        id=order.id,
        total=order.amount * 1.2,
        units=float(order.quantity),
        country=(None if order.customer is None else order.customer.country),
        large=order.amount >= 100.0,
    )


@app.agent(topics.orders, name="slim_orders")
async def slim_orders(stream: Stream[Order]) -> None:
    async for run in stream.runs():
        for order in run:
            if not slim_orders_where(order):
                continue
            slim = select_slim(order)
            run.send(topics.slim_orders, slim)
