"""Agent "account_minutes": from orders | group_by account_id | aggregate minutes_by_account window tumbling 1m grace 10s emit final { account_id = key, window_start = window.start, window_end = window.end, orders = count(), amount = sum(amount) } | to account_minutes"""

from streamc_runtime import Stream, Window

from .. import topics
from ..app import app
from ..records import AccountMinute, MinutesByAccountState, Order


def by_account_id(order: Order) -> str:
    """group_by account_id"""
    return order.account_id


def fold_minutes_by_account(state: MinutesByAccountState, order: Order) -> MinutesByAccountState:
    """minutes_by_account window tumbling 1m grace 10s emit final { account_id = key, window_start = window.start, window_end = window.end, orders = count(), amount = sum(amount) }"""
    state.orders += 1
    state.amount += order.amount
    return state


def row_minutes_by_account(key: str, window: Window, state: MinutesByAccountState) -> AccountMinute:
    """A new row of table minutes_by_account."""
    return AccountMinute(
        account_id=key,
        window_start=window.start,
        window_end=window.end,
        orders=state.orders,
        amount=state.amount,
    )


@app.agent(topics.orders, name="account_minutes")
async def account_minutes(stream: Stream[Order]) -> None:
    async for run in (
        stream.group_by(
            by_account_id, topic=topics.orders_account_minutes_orders_account_id_repartition
        )
        .aggregate(
            topics.minutes_by_account,
            fold=fold_minutes_by_account,
            row=row_minutes_by_account,
            emit="final",
        )
        .runs()
    ):
        for account_minute in run:
            run.send(topics.account_minutes, account_minute)
