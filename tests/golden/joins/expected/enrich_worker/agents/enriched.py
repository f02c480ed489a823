"""Agent "enriched": from orders_by_account as order | left join accounts_by_id as account on key | where account == null or account.tier != \"blocked\" | select Enriched { id = order.id, amount = amount, tier = account.tier } | to enriched"""

from streamc_runtime import Stream

from .. import topics
from ..app import app
from ..records import Account, Enriched, Order


def enriched_where(pair: tuple[Order, Account | None]) -> bool:
    """where account == null or account.tier != \"blocked\" """
    order, account = pair
    return account is None or (None if account is None else account.tier) != "blocked"


def select_enriched(pair: tuple[Order, Account | None]) -> Enriched:
    """select Enriched { id = order.id, amount = amount, tier = account.tier }"""
    order, account = pair
    return Enriched(
        id=order.id, amount=order.amount, tier=(None if account is None else account.tier)
    )


@app.agent(topics.orders_by_account, name="enriched")
async def enriched(stream: Stream[Order]) -> None:
    async for run in stream.join(topics.accounts_by_id, left=True).runs():
        for pair in run:
            if not enriched_where(pair):
                continue
            value = select_enriched(pair)
            run.send(topics.enriched, value)
