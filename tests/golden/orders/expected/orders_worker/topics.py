"""Every topic the orders worker reads or writes, by its real Kafka name."""

from streamc_runtime import Tumbling

from .app import app
from .records import (
    Account,
    AccountMinute,
    AccountTotals,
    EnrichedOrder,
    MinutesByAccountState,
    Order,
    PaidOrder,
    Payment,
    TotalsByAccountState,
    Withdrawal,
)

# topic orders
orders = app.topic("orders", key_type=str, value_type=Order, partitions=4)

# topic refunds
refunds = app.topic("refunds", key_type=str, value_type=Order, partitions=4)

# topic totals
totals = app.topic("totals", key_type=str, value_type=list[Order], partitions=4)

# topic audit
audit = app.topic("audit.orders.v1", key_type=str, value_type=Order, partitions=4)

# topic large_orders
large_orders = app.topic("large_orders", key_type=str, value_type=Order, partitions=4)

# topic withdrawals
withdrawals = app.topic("withdrawals", key_type=str, value_type=Withdrawal, partitions=2)

# topic raw_events
raw_events = app.topic("raw_events", key_type=str, value_type=bytes, partitions=1)

# topic account_totals
account_totals = app.topic("account_totals", key_type=str, value_type=AccountTotals, partitions=4)

# topic account_minutes
account_minutes = app.topic("account_minutes", key_type=str, value_type=AccountMinute, partitions=4)

# topic accounts
accounts = app.topic(
    "accounts", key_type=str, value_type=Account, partitions=4, config={"cleanup.policy": "compact"}
)

# topic enriched_orders
enriched_orders = app.topic("enriched_orders", key_type=str, value_type=EnrichedOrder, partitions=4)

# topic payments
payments = app.topic("payments", key_type=str, value_type=Payment, partitions=4)

# topic paid_orders
paid_orders = app.topic("paid_orders", key_type=str, value_type=PaidOrder, partitions=4)

# named by a string in a pipeline
orders_audit_all = app.topic("orders.audit.all", key_type=str, value_type=Order, partitions=4)

# named by a string in a pipeline
orders_withdrawals_cash = app.topic(
    "orders.withdrawals.cash", key_type=str, value_type=Withdrawal, partitions=2
)

# repartition topic of a group_by
orders_totals_orders_account_id_repartition = app.topic(
    "orders-totals-orders-account_id-repartition",
    key_type=str,
    value_type=Order,
    partitions=4,
    internal=True,
)

# repartition topic of a group_by
orders_account_totals_orders_account_id_repartition = app.topic(
    "orders-account_totals-orders-account_id-repartition",
    key_type=str,
    value_type=Order,
    partitions=4,
    internal=True,
    positions=True,
)

# repartition topic of a group_by
orders_account_minutes_orders_account_id_repartition = app.topic(
    "orders-account_minutes-orders-account_id-repartition",
    key_type=str,
    value_type=Order,
    partitions=4,
    internal=True,
    positions=True,
)

# repartition topic of a group_by
orders_suspicious_withdrawals_account_of_repartition = app.topic(
    "orders-suspicious-withdrawals-account_of-repartition",
    key_type=str,
    value_type=Withdrawal,
    partitions=2,
    internal=True,
)

# table totals_by_account, changelog orders-totals_by_account-changelog
totals_by_account = app.table(
    "totals_by_account",
    key_type=str,
    value_type=AccountTotals,
    state_type=TotalsByAccountState,
    partitions=4,
)

# table minutes_by_account, changelog orders-minutes_by_account-changelog
minutes_by_account = app.table(
    "minutes_by_account",
    key_type=str,
    value_type=AccountMinute,
    state_type=MinutesByAccountState,
    partitions=4,
    window=Tumbling(size=60_000, grace=10_000),
)

# table accounts_by_id, the records of topic accounts
accounts_by_id = app.table(
    "accounts_by_id", key_type=str, value_type=Account, source=accounts, global_=False
)
