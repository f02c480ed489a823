"""Agent "reprice": from orders | process reprice | to repriced"""

from streamc_runtime import Stream

from .. import topics
from ..app import app
from ..records import Order
from ..hooks.hooks import reprice


@app.agent(topics.orders, name="reprice")
async def reprice_2(stream: Stream[Order]) -> None:
    async for order in stream.process(reprice, returns=(Order,)).to(topics.repriced):
        pass
