"""Agent "totals": from orders | group_by account_id | take 100 within 10s | through totals"""

from streamc_runtime import Stream

from .. import topics
from ..app import app
from ..records import Order


def by_account_id(order: Order) -> str:
    """group_by account_id"""
    return order.account_id


@app.agent(topics.orders, name="totals")
async def totals(stream: Stream[Order]) -> None:
    async for batch in (
        stream.group_by(by_account_id, topic=topics.orders_totals_orders_account_id_repartition)
        .take(100, within=10.0)
        .through(topics.totals)
    ):
        pass
