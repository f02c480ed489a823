"""Every topic the bench_p4 worker reads or writes, by its real Kafka name."""

from .app import app
from .records import AccountTotals, Order, TotalsByAccountState

# topic orders
orders = app.topic("bench.orders", key_type=str, value_type=Order, partitions=4)

# repartition topic of a group_by (it leads into an aggregate: records carry their position)
bench_p4_totals_orders_account_id_repartition = app.topic(
    "bench_p4-totals-orders-account_id-repartition",
    key_type=str,
    value_type=Order,
    partitions=4,
    internal=True,
    positions=True,
)

# table totals_by_account (changelog bench_p4-totals_by_account-changelog)
totals_by_account = app.table(
    "totals_by_account",
    key_type=str,
    value_type=AccountTotals,
    state_type=TotalsByAccountState,
    partitions=4,
)
