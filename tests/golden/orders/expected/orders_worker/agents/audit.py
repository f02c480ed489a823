"""Agent "audit": from orders & refunds | process add_default_language, add_client_info | echo audit, \"orders.audit.all\" | where amount >= 1000 and not (customer.country == null) and customer.country != \"NL\" | to large_orders"""

from streamc_runtime import Stream, awaitable, result_check

from .. import topics
from ..app import app
from ..records import Order
from ..hooks.hooks import add_client_info, add_default_language

check_add_default_language = result_check(Order, "add_default_language")
check_add_client_info = result_check(Order, "add_client_info")


def audit_where(order: Order) -> bool:
    """where amount >= 1000 and not (customer.country == null) and customer.country != \"NL\" """
    return (
        order.amount >= 1000
        and not ((None if order.customer is None else order.customer.country) is None)
        and (None if order.customer is None else order.customer.country) != "NL"
    )


@app.agent(topics.orders & topics.refunds, name="audit")
async def audit(stream: Stream[Order]) -> None:
    async for run in stream.runs():
        for order in run:
            order = add_default_language(order)
            if awaitable(order):
                await run.flush()
                order = await order
            order = check_add_default_language(order)
            await run.flush()
            order = check_add_client_info(await add_client_info(order))
            run.send(topics.audit, order, more_steps=True)
            run.send(topics.orders_audit_all, order, more_steps=True)
            if not audit_where(order):
                continue
            run.send(topics.large_orders, order)
