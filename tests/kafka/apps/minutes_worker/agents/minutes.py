"""Agent "minutes": from orders | group_by account_id
| aggregate minutes_by_account window tumbling 1m grace 1d emit final
    { account_id = key, window_start = window.start, window_end = window.end, orders = count() }
| to account_minutes"""

from streamc_runtime import Stream, Window

from .. import topics
from ..app import app
from ..records import AccountMinute, MinutesByAccountState, Order


def by_account_id(order: Order) -> str:
    """group_by account_id"""
    return order.account_id


def fold(state: MinutesByAccountState, order: Order) -> MinutesByAccountState:
    """minutes_by_account { orders = count() }"""
    state.orders += 1
    return state


def row(key: str, window: Window, state: MinutesByAccountState) -> AccountMinute:
    return AccountMinute(
        account_id=key, window_start=window.start, window_end=window.end, orders=state.orders
    )


@app.agent(topics.orders, name="minutes")
async def minutes(stream: Stream[Order]) -> None:
    async for _row in (
        stream.group_by(by_account_id, topic=topics.minutes_minutes_orders_account_id_repartition)
        .aggregate(topics.minutes_by_account, fold=fold, row=row, emit="final")
        .to(topics.account_minutes)
    ):
        pass
