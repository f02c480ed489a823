"""Agent "report": from totals | sink print_batch"""

from streamc_runtime import Stream

from .. import topics
from ..app import app
from ..records import Order
from ..hooks.hooks import print_batch


@app.agent(topics.totals, name="report")
async def report(stream: Stream[list[Order]]) -> None:
    async for run in stream.runs():
        for batch in run:
            print_batch(batch)
