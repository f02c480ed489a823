"""Every topic the hostile worker reads or writes, by its real Kafka name."""

from .app import app
from .records import class_, object_

# topic def
def_ = app.topic("hostile.def-topic_1", key_type=str, value_type=class_, partitions=2)

# topic lambda
lambda_ = app.topic("lambda", key_type=str, value_type=object_, partitions=2)

# topic app
app_ = app.topic("app", key_type=str, value_type=class_, partitions=2)

# named by a string in a pipeline
echo_1 = app.topic("echo.1", key_type=str, value_type=class_, partitions=2)

# named by a string in a pipeline
out_2 = app.topic("out-2", key_type=str, value_type=class_, partitions=2)

# repartition topic of a group_by
hostile_import_def_id_repartition = app.topic(
    "hostile-import-def-id-repartition",
    key_type=str,
    value_type=class_,
    partitions=2,
    internal=True,
)
