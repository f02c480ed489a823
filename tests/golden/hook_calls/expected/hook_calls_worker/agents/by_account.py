"""Agent "by_account": from orders | group_by account_of | items | sink record_pair"""

from streamc_runtime import Stream

from .. import topics
from ..app import app
from ..records import Order
from ..hooks.hooks import account_of, record_pair


@app.agent(topics.orders, name="by_account")
async def by_account(stream: Stream[Order]) -> None:
    async for run in (
        stream.group_by(
            account_of,
            topic=topics.hook_calls_by_account_orders_account_of_repartition,
            returns=str,
        )
        .items()
        .runs()
    ):
        for key, order in run:
            record_pair((key, order))
