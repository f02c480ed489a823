"""Agent "plain": from orders | sink record_plain"""

from streamc_runtime import Stream

from .. import topics
from ..app import app
from ..records import Order
from ..hooks.hooks import record_plain


@app.agent(topics.orders, name="plain")
async def plain(stream: Stream[Order]) -> None:
    async for run in stream.runs():
        for order in run:
            record_plain(order)
