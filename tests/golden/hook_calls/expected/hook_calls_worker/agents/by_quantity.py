"""Agent "by_quantity": from orders | group_by quantity_of | enumerate 1 | sink record_numbered"""

from streamc_runtime import Stream

from .. import topics
from ..app import app
from ..records import Order
from ..hooks.hooks import quantity_of, record_numbered


@app.agent(topics.orders, name="by_quantity")
async def by_quantity(stream: Stream[Order]) -> None:
    async for run in stream.group_by(
        quantity_of, topic=topics.hook_calls_by_quantity_orders_quantity_of_repartition, returns=int
    ).runs(counters=(1,)):
        for order in run:
            i = run.count(0)
            record_numbered((i, order))
