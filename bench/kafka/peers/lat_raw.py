"""Latency peer, the ceiling: a plain aiokafka loop forwarding each order to the output topic.

    python lat_raw.py --pipeline copy --bootstrap 127.0.0.1:PORT --topic T --out O --group G

`copy` sends every input record's value, unchanged, to `--out` with its key; `rekey` sends it
to a repartition topic (4 partitions, created here) keyed by its account and, from there, to
`--out`: the same two hops as a `group_by`. The values are forwarded as they are (orjson
reads the account only when re-keying). The producer has the streamc transport's defaults
(acks=all, linger 0, 256 KiB batches); positions are committed every `--commit-interval`
seconds after a flush, so a committed input is never ahead of its output.
"""

from __future__ import annotations

import asyncio
import signal
import time

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # type: ignore[import-untyped]
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]
from common import LatencyArgs, latency_args


async def run(args: LatencyArgs) -> None:
    repartition = f"{args.group}-account_id-repartition"
    topics = [args.topic]
    if args.pipeline == "rekey":
        admin = AIOKafkaAdminClient(bootstrap_servers=args.bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(repartition, 4, 1)])
        finally:
            await admin.close()
        topics.append(repartition)
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=args.session_timeout_ms,
        heartbeat_interval_ms=args.heartbeat_interval_ms,
        fetch_max_wait_ms=args.fetch_max_wait_ms,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=args.bootstrap, acks="all", linger_ms=0, max_batch_size=262144
    )
    await producer.start()
    await consumer.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    next_commit = time.monotonic() + args.commit_interval
    source = args.topic
    rekey = args.pipeline == "rekey"
    try:
        while not stop.is_set():
            fetched = await consumer.getmany(timeout_ms=100)
            for tp, records in fetched.items():
                if rekey and tp.topic == source:
                    for r in records:
                        account = orjson.loads(r.value)["account_id"].encode()
                        await producer.send(repartition, r.value, key=account)
                else:
                    for r in records:
                        await producer.send(args.out, r.value, key=r.key)
            if time.monotonic() >= next_commit:
                await producer.flush()
                await consumer.commit()
                next_commit = time.monotonic() + args.commit_interval
    finally:
        await producer.flush()
        await consumer.commit()
        await consumer.stop()
        await producer.stop()


if __name__ == "__main__":
    asyncio.run(run(latency_args()))
