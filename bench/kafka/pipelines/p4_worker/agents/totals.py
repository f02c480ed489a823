"""Agent "totals": from orders | process first_input | group_by account_id
| aggregate totals_by_account { account_id = key, orders = count(), amount = sum(amount) }
| sink count_total"""

from streamc_runtime import Stream

from .. import topics
from ..app import app
from ..hooks.hooks import count_total, first_input
from ..records import AccountTotals, Order, TotalsByAccountState


def by_account_id(order: Order) -> str:
    """group_by account_id"""
    return order.account_id


def fold(state: TotalsByAccountState, order: Order) -> TotalsByAccountState:
    """totals_by_account { orders = count(), amount = sum(amount) }"""
    state.orders += 1
    state.amount += order.amount
    return state


def row(key: str, state: TotalsByAccountState) -> AccountTotals:
    return AccountTotals(account_id=key, orders=state.orders, amount=state.amount)


@app.agent(topics.orders, name="totals")
async def totals(stream: Stream[Order]) -> None:
    async for total in (
        stream.process(first_input, returns=(Order,))
        .group_by(by_account_id, topic=topics.bench_p4_totals_orders_account_id_repartition)
        .aggregate(topics.totals_by_account, fold=fold, row=row)
    ):
        count_total(total)
