"""Every topic and table the counts worker reads or writes, by its real Kafka name."""

from .app import app
from .records import AccountTotals, Order, TotalsByAccountState

# topic orders
orders = app.topic("orders", key_type=str, value_type=Order, partitions=4)

# topic account_totals
account_totals = app.topic("account_totals", key_type=str, value_type=AccountTotals, partitions=4)

# repartition topic of a group_by
counts_totals_orders_account_id_repartition = app.topic(
    "counts-totals-orders-account_id-repartition",
    key_type=str,
    value_type=Order,
    partitions=4,
    internal=True,
    positions=True,
)

# table totals_by_account (changelog counts-totals_by_account-changelog)
totals_by_account = app.table(
    "totals_by_account",
    key_type=str,
    value_type=AccountTotals,
    state_type=TotalsByAccountState,
    partitions=4,
)
