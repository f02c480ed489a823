"""A table stays exact on the real broker through SIGKILLs and through a scale-out failover.

The `counts` app (apps/counts.sdl) counts and sums orders per account into the table
`totals_by_account` and publishes every update on `account_totals`. Orders are keyed by order
id, so every input partition feeds every table partition through the repartition topic, and
a restarted worker forwards again what it had not committed: the aggregation sees duplicates
with new repartition offsets and must skip them by their source positions.

Exactness is checked three ways: the changelog (last data record per key), the last value
published per key, and what a fresh worker restores: it is fed one more order per account
and must publish exactly the totals plus that order.

Randomness (orders, when to kill) comes from a seeded RNG; the seed is printed, and
`STREAMC_TEST_SEED` replays a run. `STREAMC_TABLE_ORDERS` changes the number of orders.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafkatest import Broker, wait_until
from tablekit import (
    CHANGELOG,
    PARTITIONS,
    PUBLISHED,
    REPARTITION,
    Order,
    Progress,
    Totals,
    changelog_totals,
    exact,
    high_watermarks,
    joined,
    make_orders,
    produce_orders,
    published_totals,
    read_to_end,
    start_worker,
)
from test_table_restore import create_orders_topic, restored, restores, stop
from workers import Worker

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.asyncio]

ORDERS = int(os.environ.get("STREAMC_TABLE_ORDERS") or 100_000)
ACCOUNTS = 1000
KILLS = 4
FEED_S = 2.0  # seconds over which each life of the worker is fed its slice of the orders


@pytest.fixture
def rng() -> random.Random:
    seed = int(os.environ.get("STREAMC_TEST_SEED") or time.time_ns() % 1_000_000)
    print(f"random seed {seed} (replay with STREAMC_TEST_SEED={seed})")
    return random.Random(seed)


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    """Every worker a test starts, terminated at teardown whatever happened."""
    started: list[Worker] = []
    yield started
    for w in started:
        w.stop()


async def folded_past(progress: Progress, target: float, workers: list[Worker]) -> None:
    """Until the aggregation has committed `target` repartitioned records."""
    deadline = time.monotonic() + 120
    while await progress.folded() < target:
        assert all(w.alive for w in workers), "".join(w.tail() for w in workers)
        assert time.monotonic() < deadline, f"no progress to {target:.0f} folded"
        await asyncio.sleep(0.1)


async def assert_exact(broker: Broker, want: Totals) -> None:
    assert changelog_totals(await read_to_end(broker, CHANGELOG)) == want
    assert published_totals(await read_to_end(broker, PUBLISHED)) == want


async def assert_restores_exact(
    broker: Broker,
    workers: list[Worker],
    log: Path,
    state_dir: Path | None,
    orders: list[Order],
    progress: Progress,
) -> None:
    """A fresh worker restores the table, to the changelog's end, then counts one more order
    per account on top."""
    ends = await high_watermarks(broker, CHANGELOG)
    worker = start_worker(workers, broker, log, state_dir)
    await joined(worker)
    done = await restored(worker, within=60)
    print(f"final restore: {done}")
    assert {q: end for q, (_, end) in done.items()} == ends
    probes = [Order(f"probe-{a}", a, 0.25) for a in sorted({o.account_id for o in orders})]
    placed = await produce_orders(broker, probes)
    await progress.wait_done(placed)
    await assert_exact(broker, exact(orders + probes))
    await stop(worker)


@pytest.mark.parametrize("store", ["memory", "rocksdb"])
async def test_sigkills_at_random_moments_leave_the_table_exact(
    fresh_broker: Broker,
    workers: list[Worker],
    tmp_path: Path,
    rng: random.Random,
    store: str,
) -> None:
    began = time.monotonic()
    state_dir = tmp_path / "state" if store == "rocksdb" else None
    log = tmp_path / "counts.log"
    orders = make_orders(ORDERS, ACCOUNTS, rng)
    # One slice of the orders per life of the worker, fed while it lives: every kill finds
    # both stages at work (forwards to the repartition topic, folds into the table).
    lives = KILLS + 1
    slices = [orders[k * ORDERS // lives : (k + 1) * ORDERS // lives] for k in range(lives)]
    await create_orders_topic(fresh_broker)
    placed: list[tuple[int, int]] = []
    kills: list[str] = []
    async with Progress(fresh_broker) as progress:
        for k in range(KILLS):
            worker = start_worker(workers, fresh_broker, log, state_dir)
            await joined(worker)
            joined_at = time.monotonic()
            feeding = asyncio.ensure_future(produce_orders(fresh_broker, slices[k], FEED_S))
            # Anywhere from the restore to past the end of the feed.
            await asyncio.sleep(rng.uniform(0.0, FEED_S + 0.5))
            assert worker.alive, worker.tail()
            worker.kill()
            at = time.monotonic() - joined_at
            placed += await feeding
            kills.append(f"{at:.2f}s after join, {await progress.folded()} folded")
        worker = start_worker(workers, fresh_broker, log, state_dir)
        await joined(worker)
        placed += await produce_orders(fresh_broker, slices[-1], FEED_S)
        await progress.wait_done(placed, within=180)
        done = time.monotonic()
        repartitioned = len(await read_to_end(fresh_broker, REPARTITION))
        await assert_exact(fresh_broker, exact(orders))
        await stop(worker)
        await assert_restores_exact(fresh_broker, workers, log, state_dir, orders, progress)
    print(
        f"{ORDERS} orders, {store} store: {KILLS} kills ({'; '.join(kills)}); done "
        f"{done - began:.1f}s after the start; {repartitioned - ORDERS} repartition "
        f"duplicates; {time.monotonic() - began:.1f}s in all"
    )


async def test_a_killed_workers_table_partitions_move_to_the_survivor_and_stay_exact(
    fresh_broker: Broker, workers: list[Worker], tmp_path: Path, rng: random.Random
) -> None:
    count = ORDERS // 4
    every = {(t, p) for t in ("orders", REPARTITION) for p in range(PARTITIONS)}
    await create_orders_topic(fresh_broker)
    a = start_worker(workers, fresh_broker, tmp_path / "a.log")
    b = start_worker(workers, fresh_broker, tmp_path / "b.log")

    def split() -> bool:
        held_a, held_b = a.assignment(), b.assignment()
        return bool(held_a and held_b and not held_a & held_b and held_a | held_b == every)

    await wait_until(lambda: split() or not (a.alive and b.alive), 45, "the workers to split")
    assert a.alive and b.alive, a.tail() + b.tail()
    b_tables = {p for t, p in b.assignment() if t == REPARTITION}
    assert b_tables and len(b_tables) < PARTITIONS

    orders = make_orders(count, ACCOUNTS, rng)
    placed = await produce_orders(fresh_broker, orders)
    async with Progress(fresh_broker) as progress:
        await folded_past(progress, rng.uniform(0.2, 0.6) * count, [a, b])
        await asyncio.sleep(rng.uniform(0, 0.3))
        mark = len(a.text())
        b.kill()
        await wait_until(
            lambda: a.assignment() == every or not a.alive, 45, "the survivor to take over"
        )
        assert a.alive, a.tail()
        # B's table partitions were restored on A from the changelog, after the takeover.
        taken = await restored(a, within=60, since=mark, partitions=b_tables)
        started = restores(a, since=mark)[0]
        assert {q: started[q] for q in b_tables} == {q: 0 for q in b_tables}  # all of it
        print(f"b held table partitions {sorted(b_tables)}; a restored {taken}")
        await progress.wait_done(placed, within=120)
        await assert_exact(fresh_broker, exact(orders))
        await stop(a)
        await assert_restores_exact(
            fresh_broker, workers, tmp_path / "c.log", None, orders, progress
        )
