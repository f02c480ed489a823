"""Every topic and table the minutes worker reads or writes, by its real Kafka name."""

from streamc_runtime import Tumbling

from .app import app
from .records import AccountMinute, MinutesByAccountState, Order

# topic orders (timestamp at)
orders = app.topic("orders", key_type=str, value_type=Order, partitions=4, timestamp_field="at")

# topic account_minutes
account_minutes = app.topic(
    "account_minutes", key_type=str, value_type=AccountMinute, partitions=4
)

# repartition topic of a group_by
minutes_minutes_orders_account_id_repartition = app.topic(
    "minutes-minutes-orders-account_id-repartition",
    key_type=str,
    value_type=Order,
    partitions=4,
    internal=True,
    positions=True,
)

# table minutes_by_account (changelog minutes-minutes_by_account-changelog)
minutes_by_account = app.table(
    "minutes_by_account",
    key_type=str,
    value_type=AccountMinute,
    state_type=MinutesByAccountState,
    partitions=4,
    window=Tumbling(size=60_000, grace=86_400_000),
)
