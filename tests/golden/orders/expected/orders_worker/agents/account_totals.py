"""Agent "account_totals": from orders | group_by account_id | aggregate totals_by_account { account_id = key, orders = count(), amount = sum(amount) } | to account_totals"""

from streamc_runtime import Stream

from .. import topics
from ..app import app
from ..records import AccountTotals, Order, TotalsByAccountState


def by_account_id(order: Order) -> str:
    """group_by account_id"""
    return order.account_id


def fold_totals_by_account(state: TotalsByAccountState, order: Order) -> TotalsByAccountState:
    """totals_by_account { account_id = key, orders = count(), amount = sum(amount) }"""
    state.orders += 1
    state.amount += order.amount
    return state


def row_totals_by_account(key: str, state: TotalsByAccountState) -> AccountTotals:
    """A new row of table totals_by_account."""
    return AccountTotals(account_id=key, orders=state.orders, amount=state.amount)


@app.agent(topics.orders, name="account_totals")
async def account_totals(stream: Stream[Order]) -> None:
    async for run in (
        stream.group_by(
            by_account_id, topic=topics.orders_account_totals_orders_account_id_repartition
        )
        .aggregate(topics.totals_by_account, fold=fold_totals_by_account, row=row_totals_by_account)
        .runs()
    ):
        for value in run:
            run.send(topics.account_totals, value)
