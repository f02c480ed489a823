"""Agent "async": from def & app | where list == list | to \"out-2\" """

from streamc_runtime import Stream

from .. import topics
from ..app import app
from ..records import class_


def async_where(value: class_) -> bool:
    """where list == list"""
    return value.list_ == value.list_


@app.agent(topics.def_ & topics.app_, name="async")
async def async_(stream: Stream[class_]) -> None:
    async for run in stream.runs():
        for value in run:
            if not async_where(value):
                continue
            run.send(topics.out_2, value, as_received=True)
