"""A windowed count stays exact on the real broker through SIGKILLs.

The `minutes` worker (apps/minutes_worker) counts orders per account in 1-minute tumbling
windows over the orders' `at` field (epoch milliseconds), grace one day, emit final. Orders
are keyed by order id, so every input partition feeds every table partition through the
repartition topic, and a restarted worker forwards again what it had not committed: the
windowed aggregation must skip those duplicates by their source positions, and restore its
windows and stream time from the changelog. The worker is killed at random moments while it
is fed; then one probe per account, a day and more later in event time, moves every table
partition's stream time past every window: each window's final row must be published exactly
once, with its exact count.
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
from streamc_runtime import Time
from tablekit import PARTITIONS, high_watermarks, joined, read_to_end
from test_table_restore import create_orders_topic, stop
from workers import Worker, ends, wait_committed

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.asyncio]

APPS = Path(__file__).parent / "apps"
GROUP = "minutes"
REPARTITION = "minutes-minutes-orders-account_id-repartition"
PUBLISHED = "account_minutes"
ORDERS = int(os.environ.get("STREAMC_WINDOW_ORDERS") or 20_000)
ACCOUNTS = 200
KILLS = 3
FEED_S = 2.0
BASE = 1_700_000_000_000  # event times: BASE + 10 ms per order (a window holds 6,000)
DAY = 86_400_000

Order = tuple[str, str, int]  # id, account, event time (ms)


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for w in started:
        w.stop()


def start(workers: list[Worker], broker: Broker, log: Path) -> Worker:
    worker = Worker("minutes_worker", APPS, broker, log).start()
    workers.append(worker)
    return worker


async def produce(broker: Broker, orders: list[Order], seconds: float) -> list[tuple[int, int]]:
    """Round robin over the partitions, paced over `seconds`; (partition, offset) of each."""
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        slices = max(1, round(seconds / 0.1))
        step = -(-len(orders) // slices)
        sent = []
        for at in range(0, len(orders), step):
            if at:
                await asyncio.sleep(seconds / slices)
            for i, (oid, account, t) in enumerate(orders[at : at + step], at):
                value = json.dumps({"id": oid, "account_id": account, "amount": 1.0, "at": t})
                sent.append(
                    await producer.send(
                        "orders", value.encode(), key=oid.encode(), partition=i % PARTITIONS
                    )
                )
        return [(m.partition, m.offset) for m in await asyncio.gather(*sent)]
    finally:
        await producer.stop()


async def wait_done(broker: Broker, placed: list[tuple[int, int]], within: float = 180) -> None:
    await wait_committed(broker, GROUP, "orders", ends(placed), within)
    marks = await high_watermarks(broker, REPARTITION)
    await wait_committed(broker, GROUP, REPARTITION, marks, within)


async def test_sigkills_leave_the_windowed_counts_exact_and_each_final_published_once(
    fresh_broker: Broker, workers: list[Worker], tmp_path: Path
) -> None:
    seed = int(os.environ.get("STREAMC_TEST_SEED") or time.time_ns() % 1_000_000)
    print(f"random seed {seed} (replay with STREAMC_TEST_SEED={seed})")
    rng = random.Random(seed)
    orders = [(f"o{i}", f"acct-{rng.randrange(ACCOUNTS)}", BASE + 10 * i) for i in range(ORDERS)]
    want = Counter((account, t - t % 60_000) for _, account, t in orders)
    lives = KILLS + 1
    slices = [orders[k * ORDERS // lives : (k + 1) * ORDERS // lives] for k in range(lives)]
    log = tmp_path / "minutes.log"
    await create_orders_topic(fresh_broker)
    placed: list[tuple[int, int]] = []
    for k in range(KILLS):
        worker = start(workers, fresh_broker, log)
        await joined(worker)
        feeding = asyncio.ensure_future(produce(fresh_broker, slices[k], FEED_S))
        await asyncio.sleep(rng.uniform(0.0, FEED_S + 0.5))
        assert worker.alive, worker.tail()
        worker.kill()
        placed += await feeding
    worker = start(workers, fresh_broker, log)
    await joined(worker)
    placed += await produce(fresh_broker, slices[-1], FEED_S)
    await wait_done(fresh_broker, placed)
    assert await read_to_end(fresh_broker, PUBLISHED) == []  # grace: nothing closed yet
    # A day later in event time, on every account: every window closes.
    accounts = sorted({a for _, a, _ in orders})
    probes = [(f"probe-{a}", a, BASE + 2 * DAY) for a in accounts]
    placed += await produce(fresh_broker, probes, 0)
    await wait_done(fresh_broker, placed)
    published = []
    for r in await read_to_end(fresh_broker, PUBLISHED):
        row = json.loads(r.value)
        start_ms = Time.parse(row["window_start"]).ms
        published.append((row["account_id"], start_ms, row["orders"]))
    windows = [(a, s) for a, s, _ in published]
    assert len(windows) == len(set(windows)), "a final row published twice"
    assert {(a, s): n for a, s, n in published} == dict(want)
    assert await read_to_end(fresh_broker, "minutes-dlq") == []  # nothing late
    await stop(worker)
