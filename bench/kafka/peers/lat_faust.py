"""Latency peer: the copy and re-key pipelines in faust-streaming, as its documentation shows.

    python lat_faust.py --pipeline copy --bootstrap 127.0.0.1:PORT --topic T --out O --group G

An `Order` faust.Record; `copy` sends each order to the output topic, `rekey` does so after
`stream.group_by(Order.account_id)` (Faust's repartition topic). No web server, no tables.
"""

from __future__ import annotations

import sys

import faust
from common import latency_args

args = latency_args()

app = faust.App(
    args.group,
    broker=f"kafka://{args.bootstrap}",
    datadir=args.state_dir,
    web_enabled=False,
    topic_partitions=4,
    consumer_auto_offset_reset="earliest",
    broker_commit_interval=args.commit_interval,
    broker_session_timeout=args.session_timeout_ms / 1000,
    broker_heartbeat_interval=args.heartbeat_interval_ms / 1000,
)


class Order(faust.Record, serializer="json"):
    id: str
    account_id: str
    amount: float
    currency: str
    sent: float


orders = app.topic(args.topic, key_type=str, value_type=Order, partitions=4)
out = app.topic(args.out, key_type=str, value_type=Order, partitions=4)
repartition = app.topic(
    f"{args.group}-account_id-repartition", value_type=Order, partitions=4, internal=True
)


@app.agent(orders)
async def forward(stream: faust.StreamT[Order]) -> None:
    if args.pipeline == "rekey":
        async for order in stream.group_by(Order.account_id, topic=repartition):
            await out.send(key=order.account_id, value=order)
    else:
        async for key, order in stream.items():
            await out.send(key=key, value=order)


if __name__ == "__main__":
    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn", "--without-web"]
    app.main()
