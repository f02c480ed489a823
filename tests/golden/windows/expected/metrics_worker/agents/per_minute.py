"""Agent "per_minute": from orders | group_by account_id | aggregate minutes window tumbling 1m grace 10s emit final late to late_orders { account_id = key, window_start = window.start, window_end = window.end, orders = count(), amount = sum(amount) } | to minute_totals"""

from streamc_runtime import Stream, Window

from .. import topics
from ..app import app
from ..records import AccountMinute, MinutesState, Order


def by_account_id(order: Order) -> str:
    """group_by account_id"""
    return order.account_id


def fold_minutes(state: MinutesState, order: Order) -> MinutesState:
    """minutes window tumbling 1m grace 10s emit final late to late_orders { account_id = key, window_start = window.start, window_end = window.end, orders = count(), amount = sum(amount) }"""
    state.orders += 1
    state.amount += order.amount
    return state


def row_minutes(key: str, window: Window, state: MinutesState) -> AccountMinute:
    """A new row of table minutes."""
    return AccountMinute(
        account_id=key,
        window_start=window.start,
        window_end=window.end,
        orders=state.orders,
        amount=state.amount,
    )


@app.agent(topics.orders, name="per_minute")
async def per_minute(stream: Stream[Order]) -> None:
    async for run in (
        stream.group_by(
            by_account_id, topic=topics.metrics_per_minute_orders_account_id_repartition
        )
        .aggregate(
            topics.minutes,
            fold=fold_minutes,
            row=row_minutes,
            emit="final",
            late=topics.late_orders,
        )
        .runs()
    ):
        for account_minute in run:
            run.send(topics.minute_totals, account_minute)
