"""Agent "kept": from orders | filter is_kept | sink record_retried"""

from streamc_runtime import Stream, sink

from .. import topics
from ..app import app
from ..records import Order
from ..hooks.hooks import is_kept, record_retried


@app.agent(topics.orders, name="kept")
async def kept(stream: Stream[Order]) -> None:
    async for order in stream.filter(is_kept, returns=bool):
        await sink(record_retried, order)
