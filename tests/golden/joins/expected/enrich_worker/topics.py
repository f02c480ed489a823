"""Every topic the enrich worker reads or writes, by its real Kafka name."""

from .app import app
from .records import Order, Slim

# topic orders
orders = app.topic("orders", key_type=str, value_type=Order, partitions=4)

# topic slim_orders
slim_orders = app.topic("slim_orders", key_type=str, value_type=Slim, partitions=4)
