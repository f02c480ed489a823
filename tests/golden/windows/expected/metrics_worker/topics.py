"""Every topic the metrics worker reads or writes, by its real Kafka name."""

from streamc_runtime import Hopping, Session, Tumbling

from .app import app
from .records import AccountMinute, MinutesState, Order, Rolling, RollingState, Visit, VisitsState

# topic orders
orders = app.topic(
    "orders", key_type=str, value_type=Order, partitions=2, timestamp_field="created_at"
)

# topic minute_totals
minute_totals = app.topic("minute_totals", key_type=str, value_type=AccountMinute, partitions=2)

# topic rolling_totals
rolling_totals = app.topic("rolling_totals", key_type=str, value_type=Rolling, partitions=2)

# topic visit_totals
visit_totals = app.topic("visit_totals", key_type=str, value_type=Visit, partitions=2)

# topic late_orders
late_orders = app.topic("late_orders", key_type=str, value_type=Order, partitions=2)

# topic paid_orders
paid_orders = app.topic("paid_orders", key_type=str, value_type=Order, partitions=2)

# repartition topic of a group_by
metrics_per_minute_orders_account_id_repartition = app.topic(
    "metrics-per_minute-orders-account_id-repartition",
    key_type=str,
    value_type=Order,
    partitions=2,
    internal=True,
    positions=True,
)

# repartition topic of a group_by
metrics_rolling_orders_account_id_repartition = app.topic(
    "metrics-rolling-orders-account_id-repartition",
    key_type=str,
    value_type=Order,
    partitions=2,
    internal=True,
    positions=True,
)

# repartition topic of a group_by
metrics_visits_orders_account_id_repartition = app.topic(
    "metrics-visits-orders-account_id-repartition",
    key_type=str,
    value_type=Order,
    partitions=2,
    internal=True,
    positions=True,
)

# table minutes, changelog metrics-minutes-changelog
minutes = app.table(
    "minutes",
    key_type=str,
    value_type=AccountMinute,
    state_type=MinutesState,
    partitions=2,
    window=Tumbling(size=60_000, grace=10_000),
)

# table rolling, changelog metrics-rolling-changelog
rolling = app.table(
    "rolling",
    key_type=str,
    value_type=Rolling,
    state_type=RollingState,
    partitions=2,
    window=Hopping(size=600_000, advance=300_000, grace=0),
)

# table visits, changelog metrics-visits-changelog
visits = app.table(
    "visits",
    key_type=str,
    value_type=Visit,
    state_type=VisitsState,
    partitions=2,
    window=Session(gap=1_800_000, grace=60_000),
)
