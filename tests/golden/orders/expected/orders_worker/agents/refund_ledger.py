"""Agent "refund_ledger": from refunds | events | sink handle_refund"""

from streamc_runtime import Event, Stream

from .. import topics
from ..app import app
from ..records import Order
from ..hooks.hooks import handle_refund


@app.agent(topics.refunds, name="refund_ledger")
async def refund_ledger(stream: Stream[Order]) -> None:
    async for run in stream.events().runs():
        for event in run:
            await run.flush()
            await handle_refund(event)
