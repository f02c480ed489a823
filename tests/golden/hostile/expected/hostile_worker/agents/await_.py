"""Agent "await": from lambda | where id % 2 == 0 and type.import >= 0 | take 3 within 500ms | enumerate -1"""

from streamc_runtime import Stream

from .. import topics
from ..app import app
from ..records import object_


def await_where(value: object_) -> bool:
    """where id % 2 == 0 and type.import >= 0"""
    return value.id % 2 == 0 and value.type.import_ >= 0


@app.agent(topics.lambda_, name="await")
async def await_(stream: Stream[object_]) -> None:
    async for run in stream.filter(await_where).take(3, within=0.5).runs(counters=(-1,)):
        for batch in run:
            i = run.count(0)
