"""Every topic the ledger worker reads or writes, by its real Kafka name."""

from .app import app
from .records import Count, CountsState, Order, Stats, StatsState

# topic orders
orders = app.topic("orders", key_type=str, value_type=Order, partitions=2)

# topic stats_changes
stats_changes = app.topic("stats_changes", key_type=str, value_type=Stats, partitions=2)

# topic big_counts
big_counts = app.topic("big_counts", key_type=str, value_type=Count, partitions=2)

# repartition topic of a group_by
ledger_stats_orders_account_id_repartition = app.topic(
    "ledger-stats-orders-account_id-repartition",
    key_type=str,
    value_type=Order,
    partitions=2,
    internal=True,
    positions=True,
)

# table stats, changelog ledger-stats-changelog
stats = app.table("stats", key_type=str, value_type=Stats, state_type=StatsState, partitions=2)

# table counts, changelog ledger-counts-changelog
counts = app.table("counts", key_type=str, value_type=Count, state_type=CountsState, partitions=2)
