"""Agent "regional": from orders | join regions_by_code as region on account_id | select Regional { id = id, region = region.name } | to regional"""

from streamc_runtime import Stream

from .. import topics
from ..app import app
from ..records import Order, Region, Regional


def by_account_id(order: Order) -> str:
    """join regions_by_code on account_id"""
    return order.account_id


def select_regional(pair: tuple[Order, Region]) -> Regional:
    """select Regional { id = id, region = region.name }"""
    order, region = pair
    return Regional(id=order.id, region=region.name)


@app.agent(topics.orders, name="regional")
async def regional(stream: Stream[Order]) -> None:
    async for run in stream.join(topics.regions_by_code, on=by_account_id).runs():
        for pair in run:
            value = select_regional(pair)
            run.send(topics.regional, value)
