"""Agent "audit": from orders & refunds | process add_default_language, add_client_info | echo audit, \"orders.audit.all\" | where amount >= 1000 and not (customer.country == null) and customer.country != \"NL\" | to large_orders"""

from streamc_runtime import Stream

from .. import topics
from ..app import app
from ..records import Order
from ..hooks.hooks import add_client_info, add_default_language


def audit_where(order: Order) -> bool:
    """where amount >= 1000 and not (customer.country == null) and customer.country != \"NL\" """
    return (
        order.amount >= 1000
        and not ((None if order.customer is None else order.customer.country) is None)
        and (None if order.customer is None else order.customer.country) != "NL"
    )


@app.agent(topics.orders & topics.refunds, name="audit")
async def audit(stream: Stream[Order]) -> None:
    async for order in (
        stream.process(add_default_language, add_client_info, returns=(Order, Order))
        .echo(topics.audit, topics.orders_audit_all)
        .filter(audit_where)
        .to(topics.large_orders)
    ):
        pass
