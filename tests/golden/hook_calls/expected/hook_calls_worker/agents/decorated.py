"""Agent "decorated": from orders | sink record_decorated"""

from streamc_runtime import Stream, sink

from .. import topics
from ..app import app
from ..records import Order
from ..hooks.hooks import record_decorated


@app.agent(topics.orders, name="decorated")
async def decorated(stream: Stream[Order]) -> None:
    async for run in stream.runs():
        for order in run:
            await run.flush()
            await sink(record_decorated, order)
