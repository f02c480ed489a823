"""Agent "raw": from raw_events | sink log_raw"""

from streamc_runtime import Stream

from .. import topics
from ..app import app
from ..hooks.hooks import log_raw


@app.agent(topics.raw_events, name="raw")
async def raw(stream: Stream[bytes]) -> None:
    async for run in stream.runs():
        for value in run:
            log_raw(value)
