"""A windowed stream-stream join stays exact on the real broker through SIGKILLs.

The `paid` app (apps/paid.sdl) outer-joins orders with payments keyed by account, within 1 s
of event time (the message timestamps), grace a day. The worker is killed at random moments
while both topics are fed; each restart restores the join's buffers from their changelog and
reads again what was not committed, which the skip rule must not buffer twice. Then one probe
order per partition, two days later in event time, closes every window: every pair of the
inputs is published (at least once: a replay may publish it again), never a pair that is not
one, and every order and payment without a partner exactly once, never one that found a
partner before a kill.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
from kafkatest import Broker
from streamc_runtime.memory import partition_for_key
from tablekit import joined, read_to_end
from test_table_restore import stop
from test_worker import create_topics
from workers import Worker, build, ends, wait_committed

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.asyncio]

APPS = Path(__file__).parent / "apps"
ORDERS = int(os.environ.get("STREAMC_JOIN_ORDERS") or 4_000)
ACCOUNTS = 100
PARTITIONS = 4
KILLS = 3
FEED_S = 2.0
BASE = 1_700_000_000_000  # event times: BASE + 10 ms per order
DAY = 86_400_000
WITHIN = 1_000

Record = tuple[str, str, bytes, int]  # topic, key, value, event time (ms)


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for w in started:
        w.stop()


async def produce(
    broker: Broker, records: list[Record], seconds: float
) -> list[tuple[str, int, int]]:
    """Paced over `seconds`; (topic, partition, offset) of each."""
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        slices = max(1, round(seconds / 0.1))
        step = -(-len(records) // slices)
        sent = []
        for at in range(0, len(records), step):
            if at:
                await asyncio.sleep(seconds / slices)
            for topic, key, value, t in records[at : at + step]:
                sent.append(
                    (topic, await producer.send(topic, value, key=key.encode(), timestamp_ms=t))
                )
        return [(topic, (m := await fut).partition, m.offset) for topic, fut in sent]
    finally:
        await producer.stop()


async def wait_done(broker: Broker, placed: list[tuple[str, int, int]]) -> None:
    for topic in ("orders", "payments"):
        mine = [(p, o) for t, p, o in placed if t == topic]
        await wait_committed(broker, "paid", topic, ends(mine), 180)


async def test_sigkills_leave_every_pair_published_and_each_unmatched_one_once(
    fresh_broker: Broker, workers: list[Worker], tmp_path: Path
) -> None:
    seed = int(os.environ.get("STREAMC_TEST_SEED") or time.time_ns() % 1_000_000)
    print(f"random seed {seed} (replay with STREAMC_TEST_SEED={seed})")
    rng = random.Random(seed)
    out = build(APPS / "paid.sdl", tmp_path / "build")
    records: list[Record] = []
    orders: list[tuple[str, str, int]] = []
    payments: list[tuple[int, str, int]] = []
    for i in range(ORDERS):
        account, t = f"acct-{rng.randrange(ACCOUNTS)}", BASE + 10 * i
        order = json.dumps({"id": f"o{i}", "account_id": account}).encode()
        records.append(("orders", account, order, t))
        orders.append((f"o{i}", account, t))
        if rng.random() < 0.6:  # a payment for it, before or after it, maybe too far
            pt = t + rng.randint(-2 * WITHIN, 2 * WITHIN)
            payment = json.dumps({"id": i, "account_id": account}).encode()
            records.append(("payments", account, payment, pt))
            payments.append((i, account, pt))
    pairs = {
        (o, p)
        for o, oa, ot in orders
        for p, pa, pt in payments
        if oa == pa and abs(ot - pt) <= WITHIN
    }
    lonely = Counter(
        [(o, None) for o, _, _ in orders if not any(pair[0] == o for pair in pairs)]
        + [(None, p) for p, _, _ in payments if not any(pair[1] == p for pair in pairs)]
    )
    await create_topics(fresh_broker, {"orders": PARTITIONS, "payments": PARTITIONS})
    lives = KILLS + 1
    slices = [records[k * len(records) // lives : (k + 1) * len(records) // lives]
              for k in range(lives)]  # fmt: skip
    log = tmp_path / "paid.log"
    placed: list[tuple[str, int, int]] = []

    def start() -> Worker:
        worker = Worker("paid_worker", out, fresh_broker, log).start()
        workers.append(worker)
        return worker

    for k in range(KILLS):
        worker = start()
        await joined(worker)
        feeding = asyncio.ensure_future(produce(fresh_broker, slices[k], FEED_S))
        await asyncio.sleep(rng.uniform(0.0, FEED_S + 0.5))
        assert worker.alive, worker.tail()
        worker.kill()
        placed += await feeding
    worker = start()
    await joined(worker)
    placed += await produce(fresh_broker, slices[-1], FEED_S)
    await wait_done(fresh_broker, placed)
    # Two days later in event time, one probe order on every partition: every window closes.
    keys: dict[int, str] = {}
    for n in range(1000):
        keys.setdefault(partition_for_key(f"probe-{n}".encode(), PARTITIONS), f"probe-{n}")
    probes = [
        ("orders", key, json.dumps({"id": f"probe-{q}", "account_id": key}).encode(),
         BASE + 2 * DAY)
        for q, key in sorted(keys.items())
    ]  # fmt: skip
    assert len(probes) == PARTITIONS
    placed += await produce(fresh_broker, probes, 0)
    await wait_done(fresh_broker, placed)
    published = [json.loads(r.value) for r in await read_to_end(fresh_broker, "paid")]
    got = [(row["order"], row["payment"]) for row in published]
    joined_pairs = {(o, p) for o, p in got if o is not None and p is not None}
    assert joined_pairs == pairs  # every pair, and only pairs
    assert Counter((o, p) for o, p in got if o is None or p is None) == lonely
    assert await read_to_end(fresh_broker, "paid-dlq") == []  # nothing late
    await stop(worker)
