"""Hand-written stateful apps for the table tests, as generated code would write them
(STATE.md section 2): a state record, a fold, a row function, `app.table` and `aggregate`."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from rtkit import Order
from streamc_runtime import App, Record, Stream
from streamc_runtime.state import Table


class AccountTotals(Record, kw_only=True):
    account_id: str
    orders: int
    amount: float


class TotalsState(Record, kw_only=True):
    orders: int = 0
    amount: float = 0.0


def fold(state: TotalsState, order: Order) -> TotalsState:
    """totals { orders = count(), amount = sum(amount) }"""
    state.orders += 1
    state.amount += order.amount
    return state


def row(key: str, state: TotalsState) -> AccountTotals:
    return AccountTotals(account_id=key, orders=state.orders, amount=state.amount)


def by_account(order: Order) -> str:
    return order.account_id


def totals_app(
    partitions: int = 2,
    *,
    merge: bool = False,
    name: str = "shop",
    fused: bool = False,
    source: str = "orders",
) -> App:
    """`from orders [& refunds] | group_by account_id | aggregate totals | to account_totals`;
    `fused`: as generated code runs it, a fused loop (`runs()`) after the aggregate; `source`:
    the name of the orders topic."""
    app = App(name)
    orders = app.topic(source, key_type=str, value_type=Order, partitions=partitions)
    inputs: Any = orders
    if merge:
        inputs = orders & app.topic(
            "refunds", key_type=str, value_type=Order, partitions=partitions
        )
    repartition = app.topic(
        f"{name}-totals-orders-account_id-repartition",
        key_type=str,
        value_type=Order,
        partitions=partitions,
        internal=True,
        positions=True,
    )
    published = app.topic(
        "account_totals", key_type=str, value_type=AccountTotals, partitions=partitions
    )
    table: Table[str, TotalsState] = app.table(
        "totals",
        key_type=str,
        value_type=AccountTotals,
        state_type=TotalsState,
        partitions=partitions,
    )

    @app.agent(inputs, name="totals")
    async def totals(stream: Stream[Order]) -> None:
        rows = stream.group_by(by_account, topic=repartition, returns=str).aggregate(
            table, fold=fold, row=row
        )
        if fused:
            async for run in rows.runs():
                for total in run:
                    run.send(published, total)
            return
        async for _ in rows.to(published):
            pass

    return app


def exact(orders: Iterable[Order]) -> dict[str, AccountTotals]:
    """What applying each order exactly once gives."""
    counts: dict[str, int] = defaultdict(int)
    sums: dict[str, float] = defaultdict(float)
    for order in orders:
        counts[order.account_id] += 1
        sums[order.account_id] += order.amount
    return {k: AccountTotals(account_id=k, orders=counts[k], amount=sums[k]) for k in counts}
