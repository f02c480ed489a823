"""Every topic the enrich worker reads or writes, by its real Kafka name."""

from .app import app
from .records import Account, Enriched, Order, Payment, Region, Regional, Settled, Slim

# topic orders
orders = app.topic("orders", key_type=str, value_type=Order, partitions=4)

# topic slim_orders
slim_orders = app.topic("slim_orders", key_type=str, value_type=Slim, partitions=4)

# topic accounts
accounts = app.topic(
    "accounts", key_type=str, value_type=Account, partitions=4, config={"cleanup.policy": "compact"}
)

# topic regions
regions = app.topic(
    "regions", key_type=str, value_type=Region, partitions=2, config={"cleanup.policy": "compact"}
)

# topic orders_by_account
orders_by_account = app.topic("orders_by_account", key_type=str, value_type=Order, partitions=4)

# topic enriched
enriched = app.topic("enriched", key_type=str, value_type=Enriched, partitions=4)

# topic regional
regional = app.topic("regional", key_type=str, value_type=Regional, partitions=4)

# topic payments
payments = app.topic("payments", key_type=str, value_type=Payment, partitions=4)

# topic late_orders
late_orders = app.topic("late_orders", key_type=str, value_type=Order, partitions=4)

# topic settled
settled = app.topic("settled", key_type=str, value_type=Settled, partitions=4)

# table accounts_by_id, the records of topic accounts
accounts_by_id = app.table(
    "accounts_by_id", key_type=str, value_type=Account, source=accounts, global_=False
)

# table regions_by_code, the records of topic regions (global)
regions_by_code = app.table(
    "regions_by_code", key_type=str, value_type=Region, source=regions, global_=True
)
