"""Agent "kept": from orders | filter is_kept | sink record_retried"""

from streamc_runtime import Stream, awaitable, result_check, sink

from .. import topics
from ..app import app
from ..records import Order
from ..hooks.hooks import is_kept, record_retried

check_is_kept = result_check(bool, "is_kept")


@app.agent(topics.orders, name="kept")
async def kept(stream: Stream[Order]) -> None:
    async for run in stream.runs():
        for order in run:
            keep = is_kept(order)
            if awaitable(keep):
                await run.flush()
                keep = await keep
            keep = check_is_kept(keep)
            if not keep:
                continue
            await run.flush()
            await sink(record_retried, order)
