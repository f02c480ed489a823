"""Every topic the hook_calls worker reads or writes, by its real Kafka name."""

from .app import app
from .records import Order

# topic orders
orders = app.topic("orders", key_type=str, value_type=Order, partitions=2)

# topic repriced
repriced = app.topic("repriced", key_type=str, value_type=Order, partitions=2)

# repartition topic of a group_by
hook_calls_by_account_orders_account_of_repartition = app.topic(
    "hook_calls-by_account-orders-account_of-repartition",
    key_type=str,
    value_type=Order,
    partitions=2,
    internal=True,
)

# repartition topic of a group_by
hook_calls_by_quantity_orders_quantity_of_repartition = app.topic(
    "hook_calls-by_quantity-orders-quantity_of-repartition",
    key_type=int,
    value_type=Order,
    partitions=2,
    internal=True,
)
