"""Agent "enriched_orders": from orders as order | left join accounts_by_id as account on key | select EnrichedOrder { id = order.id, account_id = order.account_id, amount = order.amount, tier = account.tier } | to enriched_orders"""

from streamc_runtime import Stream

from .. import topics
from ..app import app
from ..records import Account, EnrichedOrder, Order


def select_enriched_order(pair: tuple[Order, Account | None]) -> EnrichedOrder:
    """select EnrichedOrder { id = order.id, account_id = order.account_id, amount = order.amount, tier = account.tier }"""
    order, account = pair
    return EnrichedOrder(
        id=order.id,
        account_id=order.account_id,
        amount=order.amount,
        tier=(None if account is None else account.tier),
    )


@app.agent(topics.orders, name="enriched_orders")
async def enriched_orders(stream: Stream[Order]) -> None:
    async for run in stream.join(topics.accounts_by_id, left=True).runs():
        for pair in run:
            enriched_order = select_enriched_order(pair)
            run.send(topics.enriched_orders, enriched_order)
