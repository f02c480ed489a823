"""Agent "reprice": from orders | process reprice | to repriced"""

from streamc_runtime import Stream, awaitable, result_check

from .. import topics
from ..app import app
from ..records import Order
from ..hooks.hooks import reprice

check_reprice = result_check(Order, "reprice")


@app.agent(topics.orders, name="reprice")
async def reprice_2(stream: Stream[Order]) -> None:
    async for run in stream.runs():
        for order in run:
            order = reprice(order)
            if awaitable(order):
                await run.flush()
                order = await order
            order = check_reprice(order)
            run.send(topics.repriced, order)
