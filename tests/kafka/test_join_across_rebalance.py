"""A stream-table join on Tansu keeps every order, with its account's row, while workers come
and go: a second worker joins mid-stream, then the first is SIGKILLed mid-stream.

The `joins` app (apps/joins.sdl) left-joins orders with a table over the compacted `accounts`
topic, co-partitioned (`on key`) or global. Every order must come out on `enriched` with the
tier its account had: the table partitions that move to the newcomer (at the join) or to the
survivor (at the kill) are restored from the accounts topic before their first lookup.
Delivery is at least once: only orders of partitions the killed worker held may come out
twice, and each copy carries the right tier. After the kill the accounts are updated and new
orders must see the new tiers (the table follows its topic on the survivor).

Randomness (orders, when to kill) comes from a seeded RNG; `STREAMC_TEST_SEED` replays a run.
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
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]
from kafkatest import Broker, kafka_partition, wait_until
from tablekit import read_to_end
from test_table_restore import stop
from workers import Out, Worker, build, ends, wait_committed

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.asyncio]

APP = Path(__file__).parent / "apps" / "joins.sdl"
PARTITIONS = 4
ACCOUNTS = 40
KNOWN = 36  # accounts 0..35 have a row; orders of the others get no tier (left join)
SLICE = 1500  # orders per slice
FEED_S = 2.0


@pytest.fixture
def rng() -> random.Random:
    seed = int(os.environ.get("STREAMC_TEST_SEED") or time.time_ns() % 1_000_000)
    print(f"random seed {seed} (replay with STREAMC_TEST_SEED={seed})")
    return random.Random(seed)


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for w in started:
        w.stop()


def account(i: int) -> str:
    return f"acct-{i}"


def tier(i: int, version: int) -> str:
    return f"v{version}-{account(i)}"


async def create_topics(broker: Broker) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic("orders", PARTITIONS, 1),
                NewTopic("accounts", PARTITIONS, 1, topic_configs={"cleanup.policy": "compact"}),
            ]
        )
    finally:
        await admin.close()


async def send(
    broker: Broker, topic: str, records: list[tuple[str, dict[str, object]]], seconds: float = 0
) -> list[tuple[int, int]]:
    """Produce (key, value) records, keyed so Kafka's partitioner places them (as the app's
    own writes would be); with `seconds`, in bursts spread over that long. Returns each
    one's (partition, offset)."""
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        bursts = max(1, round(seconds / 0.1))
        step = -(-len(records) // bursts) if records else 1
        futures = []
        for at in range(0, len(records), step):
            if at:
                await asyncio.sleep(seconds / bursts)  # pacing only
            for key, value in records[at : at + step]:
                futures.append(
                    await producer.send(topic, json.dumps(value).encode(), key=key.encode())
                )
        metas = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return [(m.partition, m.offset) for m in metas]


def orders(prefix: str, rng: random.Random) -> list[tuple[str, dict[str, object]]]:
    out: list[tuple[str, dict[str, object]]] = []
    for n in range(SLICE):
        acct = account(rng.randrange(ACCOUNTS))
        out.append((acct, {"id": f"{prefix}{n}", "account_id": acct, "amount": 1.0}))
    return out


def accounts(version: int) -> list[tuple[str, dict[str, object]]]:
    return [
        (account(i), {"account_id": account(i), "tier": tier(i, version)}) for i in range(KNOWN)
    ]


def held(worker: Worker) -> set[int]:
    return {p for t, p in worker.assignment() if t == "orders"}


def decoded(records: list[Out]) -> list[tuple[str, dict[str, object]]]:
    return [((r.key or b"").decode(), json.loads(r.value or b"null")) for r in records]


async def until_new_tiers_joined(broker: Broker, rng: random.Random) -> None:
    """Until an order of each partition's last updated account comes out with its new tier:
    the survivor has applied every update (a partition's records are applied in order)."""
    last: dict[int, int] = {}
    for i in range(KNOWN):
        last[kafka_partition(account(i).encode(), PARTITIONS)] = i
    pending = set(last.values())
    deadline = time.monotonic() + 60
    n = 0
    while pending:
        assert time.monotonic() < deadline, f"accounts {sorted(pending)} never showed v2"
        probes = []
        for i in sorted(pending):
            probes.append((account(i), {"id": f"probe{n}", "account_id": account(i), "amount": 0}))
            n += 1
        await send(broker, "orders", probes)
        await asyncio.sleep(0.3)
        for _key, value in decoded(await read_to_end(broker, "enriched")):
            if str(value["id"]).startswith("probe") and value["tier"] is not None:
                i = int(str(value["account_id"]).removeprefix("acct-"))
                if value["tier"] == tier(i, 2):
                    pending.discard(i)


@pytest.mark.parametrize("kind", ["co-partitioned", "global"])
async def test_a_join_across_a_join_and_a_kill_enriches_every_order_with_its_row(
    fresh_broker: Broker,
    workers: list[Worker],
    tmp_path: Path,
    rng: random.Random,
    kind: str,
) -> None:
    sdl = tmp_path / "joins.sdl"
    text = APP.read_text()
    if kind == "global":
        text = text.replace("from accounts\n", "from accounts global\n")
    sdl.write_text(text)
    package = build(sdl, tmp_path / "joins_worker")
    await create_topics(fresh_broker)
    await send(fresh_broker, "accounts", accounts(1))

    def start(name: str) -> Worker:
        worker = Worker("joins_worker", package, fresh_broker, tmp_path / f"{name}.log").start()
        workers.append(worker)
        return worker

    every = set(range(PARTITIONS))
    a = start("a")
    await wait_until(lambda: held(a) == every or not a.alive, 45, "a to join")
    assert a.alive, a.tail()

    # Slice 1: b joins while a is busy with it; the partitions split between them.
    s1 = orders("s1-", rng)
    feeding = asyncio.ensure_future(send(fresh_broker, "orders", s1, FEED_S))
    await asyncio.sleep(rng.uniform(0.2, FEED_S))
    b = start("b")

    def split() -> bool:
        ha, hb = held(a), held(b)
        return bool(ha and hb and not ha & hb and ha | hb == every)

    await wait_until(lambda: split() or not (a.alive and b.alive), 45, "a and b to split")
    assert a.alive and b.alive, a.tail() + b.tail()
    placed = await feeding

    # Slice 2: a is killed in the middle of it; b takes every partition over.
    s2 = orders("s2-", rng)
    feeding = asyncio.ensure_future(send(fresh_broker, "orders", s2, FEED_S))
    await asyncio.sleep(rng.uniform(0.2, FEED_S))
    a_held = held(a)
    a.kill()
    placed += await feeding
    await wait_until(lambda: held(b) == every or not b.alive, 45, "b to take over")
    assert b.alive, b.tail()
    # b has handled (and committed) every order so far, those a left uncommitted too.
    await wait_committed(fresh_broker, "joins", "orders", ends(placed), within=60)

    # Slice 3: after every account changed its tier (and b applied it), orders see the new one.
    await send(fresh_broker, "accounts", accounts(2))
    await until_new_tiers_joined(fresh_broker, rng)
    s3 = orders("s3-", rng)
    await send(fresh_broker, "orders", s3)

    want = {str(v["id"]): (key, v, 1) for key, v in s1 + s2} | {
        str(v["id"]): (key, v, 2) for key, v in s3
    }

    async def enriched() -> list[tuple[str, dict[str, object]]]:
        records = decoded(await read_to_end(fresh_broker, "enriched"))
        return [(k, v) for k, v in records if not str(v["id"]).startswith("probe")]

    deadline = time.monotonic() + 60
    while {str(v["id"]) for _, v in await enriched()} < want.keys():
        assert time.monotonic() < deadline and b.alive, b.tail()
        await asyncio.sleep(0.5)
    await stop(b)
    got = await enriched()

    wrong = []
    for key, value in got:
        order_key, order, version = want[str(value["id"])]
        i = int(str(order["account_id"]).removeprefix("acct-"))
        expected = {
            "id": order["id"],
            "account_id": order["account_id"],
            "tier": tier(i, version) if i < KNOWN else None,
        }
        if (key, value) != (order_key, expected):
            wrong.append((key, value, expected))
    assert wrong == [], f"{len(wrong)} enriched orders are wrong, e.g. {wrong[:3]}"
    copies = Counter(str(v["id"]) for _, v in got)
    assert copies.keys() == want.keys()
    twice = {oid for oid, n in copies.items() if n > 1}
    # Only what the killed worker had not committed comes out again: orders of its partitions.
    outside = {
        oid for oid in twice if kafka_partition(want[oid][0].encode(), PARTITIONS) not in a_held
    }
    assert outside == set(), f"orders duplicated outside a's partitions {sorted(a_held)}"
    assert not any(oid.startswith("s3-") for oid in twice)
    print(
        f"{kind}: {len(want)} orders, a held {sorted(a_held)} when killed, "
        f"{len(twice)} came out twice"
    )
