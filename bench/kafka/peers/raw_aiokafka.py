"""The ceiling: the three pipelines as plain aiokafka loops, decoding with json or orjson.

    python raw_aiokafka.py --codec orjson --pipeline p1 --bootstrap 127.0.0.1:PORT ...

What a careful hand-written consumer does, and no more: one consumer in the group with
auto-commit off, `getmany` batches, decode every value into a dict, count; commit the consumed
positions every `--commit-interval` seconds. P2 re-keys by account_id through a repartition
topic (4 partitions, created here) and counts what comes back, flushing the producer before
each commit so a committed input is never ahead of its re-keyed output (the at-least-once
promise the streamc runtime keeps too). P3 cuts batches of 100 (or whatever arrived within 1 s
of a batch's first element) and sums their amounts.

With `--batch-send` (`raw-orjson-batch`, P2's ceiling) P2 produces each fetched run in one
aiokafka `BatchBuilder` per partition (`create_batch`, `send_batch`), partitioned as the
default partitioner would (murmur2 of the key, cached per key), instead of a `send` per record.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # type: ignore[import-untyped]
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]
from aiokafka.partitioner import murmur2  # type: ignore[import-untyped]
from common import Args, Counter, parse_args, say

BATCH = 100
WITHIN = 1.0
FIRST_FETCH = 500  # records the first getmany may return (see `run`)


async def _ensure_topic(bootstrap: str, name: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()


async def _send_batched(
    producer: AIOKafkaProducer,
    topic: str,
    records: list[Any],
    loads: Callable[[bytes], Any],
    partition_of: dict[bytes, int],
) -> None:
    """Re-key a fetched run into one batch per partition; a full batch goes out and a new one
    starts."""
    builders: dict[int, Any] = {}
    for r in records:
        key = loads(r.value)["account_id"].encode()
        p = partition_of.get(key)
        if p is None:
            p = partition_of[key] = (murmur2(key) & 0x7FFFFFFF) % 4
        builder = builders.get(p)
        if builder is None:
            builder = builders[p] = producer.create_batch()
        if builder.append(key=key, value=r.value, timestamp=None) is None:
            await producer.send_batch(builder, topic, partition=p)
            builder = builders[p] = producer.create_batch()
            builder.append(key=key, value=r.value, timestamp=None)
    for p, builder in builders.items():
        await producer.send_batch(builder, topic, partition=p)


async def run(
    args: Args, loads: Callable[[bytes], Any], producer_opts: dict[str, int], batch_send: bool
) -> None:
    repartition = f"{args.group}-account_id-repartition"
    topics = [args.topic]
    if args.pipeline == "p2":
        await _ensure_topic(args.bootstrap, repartition, 4)
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
    producer = None
    if args.pipeline == "p2":
        # The same producer settings as the streamc transport's defaults (acks=all, linger 0,
        # 256 KiB batches).
        producer = AIOKafkaProducer(
            bootstrap_servers=args.bootstrap,
            acks="all",
            linger_ms=producer_opts["linger_ms"],
            max_batch_size=producer_opts["max_batch_size"],
        )
        await producer.start()
    await consumer.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    counter = Counter(args.n)
    next_commit = time.monotonic() + args.commit_interval
    batch: list[Any] = []
    batch_started = 0.0
    source = args.topic
    partition_of: dict[bytes, int] = {}
    try:
        while not stop.is_set():
            # Everything aiokafka holds per call, except before the clock starts: aiokafka
            # unpacks what it returns before returning, and a whole first fetch (~50,000
            # records) unpacked before `first` would leave that work out of the window.
            # streamc's transport takes 500 first for its own reasons (start-up latency).
            fetched = await consumer.getmany(
                timeout_ms=200, max_records=None if counter.began else FIRST_FETCH
            )
            for tp, records in fetched.items():
                if args.pipeline == "p1":
                    counter.started()
                    for r in records:
                        loads(r.value)
                    counter.add(len(records))
                elif args.pipeline == "p2":
                    assert producer is not None
                    if tp.topic == source and batch_send:
                        counter.started()
                        await _send_batched(producer, repartition, records, loads, partition_of)
                    elif tp.topic == source:
                        counter.started()
                        for r in records:
                            order = loads(r.value)
                            await producer.send(
                                repartition, r.value, key=order["account_id"].encode()
                            )
                    else:
                        for r in records:
                            loads(r.value)
                        counter.add(len(records))
                else:
                    if not batch:
                        batch_started = time.monotonic()
                    for r in records:
                        batch.append(loads(r.value))
                        if len(batch) == BATCH:
                            counter.batch(BATCH, sum(o["amount"] for o in batch))
                            batch = []
                            batch_started = time.monotonic()
            if batch and time.monotonic() - batch_started >= WITHIN:
                counter.batch(len(batch), sum(o["amount"] for o in batch))
                batch = []
            if time.monotonic() >= next_commit:
                # Positions past a partial P3 batch are committed too; a crash would lose that
                # batch's sum. The benchmark stops gracefully, and streamc's take keeps them
                # uncommitted instead, which only makes this ceiling a little more generous.
                if producer is not None:
                    await producer.flush()
                await consumer.commit()
                next_commit = time.monotonic() + args.commit_interval
    finally:
        if producer is not None:
            await producer.flush()
        await consumer.commit()
        await consumer.stop()
        if producer is not None:
            await producer.stop()
        say("stopped", count=counter.count)


def main() -> None:
    args, extra = parse_args(
        codec={"choices": ["json", "orjson"], "required": True},
        # P2's producer; the defaults are the streamc transport's (KafkaSettings).
        linger_ms={"type": int, "default": 0},
        max_batch_size={"type": int, "default": 262144},
        loop={"choices": ["asyncio", "uvloop"], "default": "asyncio"},
        batch_send={"action": "store_true"},
    )
    if extra["codec"] == "orjson":
        import orjson

        loads: Callable[[bytes], Any] = orjson.loads
    else:
        loads = json.loads
    opts = {"linger_ms": extra["linger_ms"], "max_batch_size": extra["max_batch_size"]}
    if extra["loop"] == "uvloop":
        import uvloop

        uvloop.run(run(args, loads, opts, extra["batch_send"]))
    else:
        asyncio.run(run(args, loads, opts, extra["batch_send"]))


if __name__ == "__main__":
    main()
