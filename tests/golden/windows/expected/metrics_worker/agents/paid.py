"""Agent "paid": from orders | distinct id within 1h | distinct within 1s | where paid_at != null and created_at != null and paid_at >= created_at | to paid_orders"""

from operator import attrgetter

from streamc_runtime import Stream

from .. import topics
from ..app import app
from ..records import Order


def paid_where(order: Order) -> bool:
    """where paid_at != null and created_at != null and paid_at >= created_at"""
    return (
        order.paid_at is not None
        and order.created_at is not None
        and order.paid_at >= order.created_at
    )


@app.agent(topics.orders, name="paid")
async def paid(stream: Stream[Order]) -> None:
    async for run in (
        stream.distinct(within=3_600_000, field=attrgetter("id")).distinct(within=1_000).runs()
    ):
        for order in run:
            if not paid_where(order):
                continue
            run.send(topics.paid_orders, order, as_received=True)
