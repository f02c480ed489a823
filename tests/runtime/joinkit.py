"""Hand-written join apps for the join tests, as generated code would write them (JOINS.md
section 2): an accounts table over a compacted topic, orders enriched from it."""

from __future__ import annotations

from rtkit import Order
from streamc_runtime import App, Record, Stream


class Account(Record, kw_only=True):
    account_id: str
    tier: str
    country: str = "NL"


class Enriched(Record, kw_only=True):
    account_id: str
    amount: float
    tier: str | None


def by_account_id(order: Order) -> str:
    return order.account_id


def enrich(pair: tuple[Order, Account | None]) -> Enriched:
    order, account = pair
    return Enriched(
        account_id=order.account_id,
        amount=order.amount,
        tier=None if account is None else account.tier,
    )


def join_app(
    *,
    left: bool = False,
    by_field: bool = False,
    global_: bool = False,
    partitions: int = 2,
    table_partitions: int | None = None,
    name: str = "shop",
) -> App:
    """`from orders | [left] join accounts_by_id on key|account_id | select ... | to enriched`."""
    app = App(name)
    orders = app.topic("orders", key_type=str, value_type=Order, partitions=partitions)
    accounts = app.topic(
        "accounts",
        key_type=str,
        value_type=Account,
        partitions=table_partitions or partitions,
        config={"cleanup.policy": "compact"},
    )
    enriched = app.topic("enriched", key_type=str, value_type=Enriched, partitions=partitions)
    table = app.table(
        "accounts_by_id", key_type=str, value_type=Account, source=accounts, global_=global_
    )

    @app.agent(orders, name="enriched")
    async def enriched_orders(stream: Stream[Order]) -> None:
        on = by_account_id if by_field else None
        async for _ in stream.join(table, on=on, left=left).process(enrich).to(enriched):
            pass

    return app
