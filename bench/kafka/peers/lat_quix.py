"""Latency peer: the copy and re-key pipelines in quixstreams, as its documentation shows.

    python lat_quix.py --pipeline copy --bootstrap 127.0.0.1:PORT --topic T --out O --group G

JSON to dicts and back (Quix's idiom); `copy` is `sdf.to_topic(out)`, `rekey` is
`sdf.group_by("account_id")` (Quix's repartition topic) then `to_topic(out)`. Producer and
consumer keep Quix's defaults except the group settings every implementation shares.
"""

from __future__ import annotations

from common import latency_args
from quixstreams import Application

args = latency_args()

app = Application(
    broker_address=args.bootstrap,
    consumer_group=args.group,
    auto_offset_reset="earliest",
    commit_interval=args.commit_interval,
    state_dir=args.state_dir,
    use_changelog_topics=False,
    loglevel="WARNING",
    consumer_extra_config={
        "session.timeout.ms": args.session_timeout_ms,
        "heartbeat.interval.ms": args.heartbeat_interval_ms,
        "fetch.wait.max.ms": args.fetch_max_wait_ms,
    },
    # Tansu cannot serve InitProducerId (shared/design/tansu.md).
    producer_extra_config={"enable.idempotence": False},
)
orders = app.topic(args.topic, value_deserializer="json", key_deserializer="str")
out = app.topic(args.out, value_serializer="json", key_serializer="str")
sdf = app.dataframe(orders)
if args.pipeline == "rekey":
    sdf = sdf.group_by("account_id")
sdf.to_topic(out)

if __name__ == "__main__":
    app.run()
