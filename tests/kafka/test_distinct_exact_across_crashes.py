"""`distinct` on the real broker through SIGKILLs.

The `dedup` worker (apps/dedup.sdl, built with `streamc build`) drops an order whose id it let
through less than 1 s of event time before, on its input partition. About a third of the orders
are sent a second time, a few orders later, on the same partition (a producer's retry). The
worker is killed at random moments while it is fed, and restarted: it must restore what it had
let through, and its stream time, from the changelog, so that every order reaches the output
and no retry does (an order's first sending may reach it more than once: the output is
at-least-once), and the entries the changelog restores are exactly the unexpired ones.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
from kafkatest import Broker
from tablekit import PARTITIONS, joined, read_to_end
from test_table_restore import create_orders_topic, stop
from workers import Worker, build, ends, wait_committed

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.asyncio]

APPS = Path(__file__).parent / "apps"
GROUP = "dedup"
CHANGELOG = "dedup-dedup-distinct-1-changelog"
POSITIONS_KEY = b"\x00streamc.positions"
ORDERS = int(os.environ.get("STREAMC_DEDUP_ORDERS") or 12_000)
WITHIN = 1000
KILLS = 3
FEED_S = 2.0
BASE = 1_700_000_000_000
STEP = 10  # ms of event time between orders: a retry 3 to 20 orders later is within 1 s

Sent = tuple[str, int, int, bool]  # order id, partition, timestamp, a retry


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for w in started:
        w.stop()


@pytest.fixture(scope="module")
def dedup_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(APPS / "dedup.sdl", tmp_path_factory.mktemp("dedup") / "dedup_worker")


def messages(rng: random.Random) -> list[Sent]:
    """Each order once, at BASE + STEP * i on partition i % 4; a third of them again, 3 to 20
    orders later (so still within 1 s), stamped when they are sent."""
    out: list[Sent] = []
    retries: dict[int, list[int]] = {}
    for i in range(ORDERS):
        out.append((f"o{i}", i % PARTITIONS, BASE + STEP * i, False))
        for j in retries.pop(i, []):
            out.append((f"o{j}", j % PARTITIONS, BASE + STEP * i, True))
        if rng.random() < 1 / 3:
            retries.setdefault(i + rng.randint(3, 20), []).append(i)
    return out


async def produce(broker: Broker, sent: list[Sent], seconds: float) -> list[tuple[int, int]]:
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        slices = max(1, round(seconds / 0.1))
        step = -(-len(sent) // slices)
        futures = []
        for at in range(0, len(sent), step):
            if at:
                await asyncio.sleep(seconds / slices)
            for oid, partition, ts, retry in sent[at : at + step]:
                # the amount tells a retry (2.0) from a first sending in the output
                order = {"id": oid, "account_id": "a", "amount": 2.0 if retry else 1.0}
                value = json.dumps(order).encode()
                futures.append(
                    await producer.send(
                        "orders", value, key=oid.encode(), partition=partition, timestamp_ms=ts
                    )
                )
        return [(m.partition, m.offset) for m in await asyncio.gather(*futures)]
    finally:
        await producer.stop()


def clocks(sent: list[Sent]) -> dict[int, int]:
    """Each partition's final stream time."""
    clock: dict[int, int] = {}
    for _, partition, ts, _ in sent:
        clock[partition] = max(clock.get(partition, ts), ts)
    return clock


def live_entries(sent: list[Sent]) -> dict[bytes, int]:
    """What the table must hold at the end: per partition, each order's first time, unless
    its partition's stream time has passed it by WITHIN (every retry is within it, so the
    first sending is the one let through)."""
    clock = clocks(sent)
    first: dict[str, tuple[int, int]] = {}
    for oid, partition, ts, _ in sent:
        first.setdefault(oid, (partition, ts))
    return {oid.encode(): ts for oid, (p, ts) in first.items() if ts + WITHIN > clock[p]}


async def test_sigkills_leave_distinct_exact_every_order_out_and_no_retry(
    fresh_broker: Broker, workers: list[Worker], dedup_build: Path, tmp_path: Path
) -> None:
    seed = int(os.environ.get("STREAMC_TEST_SEED") or time.time_ns() % 1_000_000)
    print(f"random seed {seed} (replay with STREAMC_TEST_SEED={seed})")
    rng = random.Random(seed)
    sent = messages(rng)
    lives = KILLS + 1
    slices = [sent[k * len(sent) // lives : (k + 1) * len(sent) // lives] for k in range(lives)]
    log = tmp_path / "dedup.log"
    await create_orders_topic(fresh_broker)
    placed: list[tuple[int, int]] = []

    def start() -> Worker:
        worker = Worker("dedup_worker", dedup_build, fresh_broker, log).start()
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
    await wait_committed(fresh_broker, GROUP, "orders", ends(placed), 180)
    out = [json.loads(r.value or b"") for r in await read_to_end(fresh_broker, "unique_orders")]
    assert {o["id"] for o in out} == {oid for oid, _, _, _ in sent}, "an order never published"
    assert [o for o in out if o["amount"] != 1.0] == [], "a retry published"
    # the entries a restore gives: the last record of each key, tombstones removing; an
    # expired entry counts for nothing (its tombstone waits for its let-through element's
    # commit and a later run of its partition)
    state: dict[bytes, int] = {}
    for r in await read_to_end(fresh_broker, CHANGELOG):
        if r.key is None or r.key == POSITIONS_KEY:
            continue
        if r.value is None:
            state.pop(r.key, None)
        else:
            state[r.key] = json.loads(r.value)[0]  # [time, position, earlier positions]
    clock, partition_of = clocks(sent), {oid.encode(): p for oid, p, _, _ in sent}
    live = {k: t for k, t in state.items() if t + WITHIN > clock[partition_of[k]]}
    assert live == live_entries(sent)
    await stop(worker)
