"""Agent "rolling": from orders | group_by account_id | aggregate rolling window hopping 10m every 5m emit updates { account_id = key, window_start = window.start, window_end = window.end, orders = count(), largest = max(amount) } | to rolling_totals"""

from streamc_runtime import Stream, Window

from .. import topics
from ..app import app
from ..records import Order, Rolling, RollingState


def by_account_id(order: Order) -> str:
    """group_by account_id"""
    return order.account_id


def fold_rolling(state: RollingState, order: Order) -> RollingState:
    """rolling window hopping 10m every 5m emit updates { account_id = key, window_start = window.start, window_end = window.end, orders = count(), largest = max(amount) }"""
    state.orders += 1
    if state.largest is None or order.amount > state.largest:
        state.largest = order.amount
    return state


def row_rolling(key: str, window: Window, state: RollingState) -> Rolling:
    """A new row of table rolling."""
    assert state.largest is not None
    return Rolling(
        account_id=key,
        window_start=window.start,
        window_end=window.end,
        orders=state.orders,
        largest=state.largest,
    )


@app.agent(topics.orders, name="rolling")
async def rolling(stream: Stream[Order]) -> None:
    async for run in (
        stream.group_by(by_account_id, topic=topics.metrics_rolling_orders_account_id_repartition)
        .aggregate(topics.rolling, fold=fold_rolling, row=row_rolling, emit="updates")
        .runs()
    ):
        for value in run:
            run.send(topics.rolling_totals, value)
