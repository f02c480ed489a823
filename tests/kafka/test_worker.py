"""Generated workers as real processes on a real broker: outputs, commits, crashes, scale-out.

Each test gets its own broker (`fresh_broker`): a worker's topic and group names are fixed by
its app. Two apps are driven:

- `samples/orders.sdl`, the showcase: on Kafka it must produce what the in-memory run
  (`streamc run`, the oracle) produces, with the same keys;
- `apps/ledger.sdl`: `group_by` into `take 20 within 300ms`, the subject of the crash,
  graceful-stop, scale-out and poison-pill tests (short batch window keeps them fast).

Randomness (when to kill) comes from a seeded RNG; the seed is printed, and
`STREAMC_TEST_SEED` replays a run.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]
from kafkatest import Broker, wait_until
from workers import (
    REPO,
    STREAMC,
    Out,
    Worker,
    build,
    committed,
    ends,
    produce,
    read_topic,
    wait_committed,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.asyncio]

APPS = Path(__file__).parent / "apps"
SAMPLES = REPO / "samples"
LEDGER_REPARTITION = "ledger-batcher-orders-account_id-repartition"


@pytest.fixture(scope="session")
def ledger_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(APPS / "ledger.sdl", tmp_path_factory.mktemp("ledger") / "ledger_worker")


@pytest.fixture(scope="session")
def orders_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(SAMPLES / "orders.sdl", tmp_path_factory.mktemp("orders") / "orders_worker")


@pytest.fixture
def rng() -> random.Random:
    seed = int(os.environ.get("STREAMC_TEST_SEED") or time.time_ns() % 1_000_000)
    print(f"random seed {seed} (replay with STREAMC_TEST_SEED={seed})")
    return random.Random(seed)


@pytest.fixture
def workers(tmp_path: Path) -> Iterable[list[Worker]]:
    """Every worker a test starts, terminated at teardown whatever happened."""
    started: list[Worker] = []
    yield started
    for w in started:
        w.stop()


async def create_topics(broker: Broker, topics: dict[str, int]) -> None:
    """What an operator does before feeding an app: create its input topics."""
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, n, 1) for t, n in topics.items()])
    finally:
        await admin.close()


def ledger_order(i: int) -> tuple[bytes, bytes]:
    """Order i, keyed (like the samples) by its account; 13 accounts over 4 partitions."""
    account = f"acct-{i % 13}"
    value = {"id": f"o{i}", "account_id": account, "amount": float(i)}
    return account.encode(), json.dumps(value).encode()


def batched_ids(records: Iterable[Out]) -> Counter[str]:
    """How many times each order id reached the `batches` topic."""
    seen: Counter[str] = Counter()
    for r in records:
        batch = json.loads(r.value or b"[]")
        assert 1 <= len(batch) <= 20, f"a take 20 batch of {len(batch)}"
        seen.update(order["id"] for order in batch)
    return seen


def start(workers: list[Worker], build_dir: Path, broker: Broker, log: Path) -> Worker:
    package = build_dir.name
    worker = Worker(package, build_dir, broker, log).start()
    workers.append(worker)
    return worker


async def joined(worker: Worker, within: float = 30) -> None:
    await wait_until(
        lambda: bool(worker.assignment()) or not worker.alive, within, "the worker to join"
    )
    assert worker.alive, worker.tail()


async def trickle(broker: Broker, ids: range, seconds: float = 1.5) -> list[tuple[int, int]]:
    """Produce orders in small bursts spread over `seconds`, so that a worker is in the middle
    of its work for that long (a kill then always finds something in flight)."""
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    await producer.start()
    try:
        bursts = [ids[i : i + 10] for i in range(0, len(ids), 10)]
        pending = []
        for burst in bursts:
            for i in burst:
                key, value = ledger_order(i)
                pending.append(await producer.send("orders", value, key=key))
            await asyncio.sleep(seconds / len(bursts))  # pacing, not waiting for a state
        metas = await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return [(m.partition, m.offset) for m in metas]


# -- the showcase on Kafka --------------------------------------------------------------------


def _jsonl_timestamps(path: Path) -> list[int | None]:
    return [json.loads(line).get("timestamp") for line in path.read_text().splitlines() if line]


def _jsonl_records(path: Path) -> list[tuple[bytes | None, bytes | None]]:
    out: list[tuple[bytes | None, bytes | None]] = []
    for line in path.read_text().splitlines():
        if line.strip():
            item = json.loads(line)
            key = item.get("key")
            out.append(
                (None if key is None else str(key).encode(), json.dumps(item["value"]).encode())
            )
    return out


def _canonical(key: bytes | str | None, value: object) -> tuple[str | None, str]:
    if isinstance(key, bytes):
        key = key.decode()
    return key, json.dumps(value, sort_keys=True)


async def test_orders_app_on_kafka_matches_the_in_memory_run(
    fresh_broker: Broker, orders_build: Path, workers: list[Worker], tmp_path: Path
) -> None:
    inputs = {
        "orders": SAMPLES / "orders.jsonl",
        "refunds": SAMPLES / "refunds.jsonl",
        "withdrawals": SAMPLES / "withdrawals.jsonl",
        "accounts": SAMPLES / "accounts.jsonl",
        "payments": SAMPLES / "payments.jsonl",
    }
    # Topics whose records do not depend on timing, compared record for record (key, value).
    # enriched_orders too: the accounts are all there before the worker starts, so every
    # order finds its account's row (restored at assignment) on Kafka as in memory.
    # paid_orders too: the payments wait for the orders of their partition (the stream join
    # merges both sides by timestamp), so the same pairs form, with nothing late.
    exact = ["audit.orders.v1", "orders.audit.all", "large_orders", "orders.withdrawals.cash",
             "enriched_orders", "paid_orders"]  # fmt: skip

    # The oracle: the same inputs through the same app on the in-memory broker.
    oracle = tmp_path / "oracle"
    oracle.mkdir()
    command = [str(STREAMC), "run", str(SAMPLES / "orders.sdl")]
    for topic, path in inputs.items():
        command += ["--input", f"{topic}={path}"]
    for topic in [*exact, "totals"]:
        command += ["--output", f"{topic}={oracle / topic}.jsonl"]
    ran = await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, timeout=120, check=False
    )
    assert ran.returncode == 0, ran.stderr
    expected: dict[str, Counter[tuple[str | None, str]]] = {}
    for topic in exact:
        lines = (oracle / f"{topic}.jsonl").read_text().splitlines()
        expected[topic] = Counter(
            _canonical(r["key"], r["value"]) for r in map(json.loads, lines) if r
        )
    assert all(expected[t] for t in exact), "the oracle produced nothing on some topic"

    await create_topics(
        fresh_broker,
        {
            "orders": 4,
            "refunds": 4,
            "withdrawals": 2,
            "raw_events": 1,
            "accounts": 4,
            "payments": 4,
        },
    )
    # With their timestamps, as `streamc run` gives them: the stream join's windows are of
    # event time.
    placed = {
        t: await produce(fresh_broker, t, _jsonl_records(p), timestamps=_jsonl_timestamps(p))
        for t, p in inputs.items()
    }
    raw = await produce(fresh_broker, "raw_events", [(b"k", b"\x00raw\xff")] * 3)
    worker = start(workers, orders_build, fresh_broker, tmp_path / "orders.log")
    await joined(worker)

    for topic in exact:
        want = sum(expected[topic].values())

        def enough(rs: list[Out], n: int = want) -> bool:
            return len(rs) >= n

        got = await read_topic(fresh_broker, topic, enough, within=60)
        actual = Counter(_canonical(r.key, json.loads(r.value or b"null")) for r in got)
        assert actual == expected[topic], f"{topic}: Kafka and in-memory runs differ"

    # totals: batches of up to 100 orders of one account; their boundaries depend on timing,
    # their contents do not.
    order_ids = {json.loads(v or b"{}")["id"] for _, v in _jsonl_records(inputs["orders"])}

    def totals_ids(rs: list[Out]) -> set[str]:
        return {o["id"] for r in rs for o in json.loads(r.value or b"[]")}

    totals = await read_topic(
        fresh_broker, "totals", lambda rs: totals_ids(rs) >= order_ids, within=60
    )
    for r in totals:
        batch = json.loads(r.value or b"[]")
        assert 1 <= len(batch) <= 100
        if r.key is not None:  # a batch's key is its events' common key
            assert {o["account_id"] for o in batch} == {r.key.decode()}

    # Committed offsets advance to the end of every input, raw and DLQ-free inputs alike.
    for topic, deliveries in [*placed.items(), ("raw_events", raw)]:
        await wait_committed(fresh_broker, "orders", topic, ends(deliveries))
    assert worker.alive, worker.tail()
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.tail()


# -- crashes and stops ------------------------------------------------------------------------


async def test_at_least_once_through_repeated_sigkills(
    fresh_broker: Broker,
    ledger_build: Path,
    workers: list[Worker],
    tmp_path: Path,
    rng: random.Random,
) -> None:
    await create_topics(fresh_broker, {"orders": 4})
    log = tmp_path / "ledger.log"
    placed: list[tuple[int, int]] = []
    per_round, rounds = 300, 4
    for n in range(rounds):
        worker = start(workers, ledger_build, fresh_broker, log)
        await joined(worker)
        # Feed it while it works, and kill it at a random instant of that work.
        feeding = asyncio.ensure_future(
            trickle(fresh_broker, range(n * per_round, (n + 1) * per_round))
        )
        await asyncio.sleep(rng.uniform(0.05, 1.4))
        assert worker.alive, worker.tail()
        worker.kill()
        placed += await feeding

    # One last life, long enough to finish everything.
    total = rounds * per_round
    worker = start(workers, ledger_build, fresh_broker, log)
    await joined(worker)  # (a SIGTERM before its handlers are installed would just kill it)
    want = {f"o{i}" for i in range(total)}
    got = await read_topic(
        fresh_broker, "batches", lambda rs: set(batched_ids(rs)) >= want, within=90
    )
    seen = batched_ids(got)
    assert set(seen) == want  # every input reached the output, and nothing else did
    print(f"{total} orders, {sum(seen.values()) - total} duplicate deliveries after {rounds} kills")
    await wait_committed(fresh_broker, "ledger", "orders", ends(placed))
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.tail()


async def test_sigterm_loses_nothing_and_commits(
    fresh_broker: Broker,
    ledger_build: Path,
    workers: list[Worker],
    tmp_path: Path,
    rng: random.Random,
) -> None:
    await create_topics(fresh_broker, {"orders": 4})
    log = tmp_path / "ledger.log"
    worker = start(workers, ledger_build, fresh_broker, log)
    await joined(worker)
    feeding = asyncio.ensure_future(trickle(fresh_broker, range(600), seconds=2.0))
    await asyncio.sleep(rng.uniform(0.3, 1.5))
    worker.signal(signal.SIGTERM)  # in the middle of the work
    assert worker.wait(30) == 0, worker.tail()
    placed = await feeding
    stopped_at = await committed(fresh_broker, "ledger", "orders", 4)
    assert sum(stopped_at.values()) > 0, "a graceful stop commits what it finished"

    worker = start(workers, ledger_build, fresh_broker, log)
    await joined(worker)
    want = {f"o{i}" for i in range(600)}
    got = await read_topic(
        fresh_broker, "batches", lambda rs: set(batched_ids(rs)) >= want, within=60
    )
    await wait_committed(fresh_broker, "ledger", "orders", ends(placed))
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.tail()

    # After the final stop everything is committed, the repartition topic included.
    assert await committed(fresh_broker, "ledger", "orders", 4) == {
        p: ends(placed).get(p, 0) for p in range(4)
    }
    repartitioned = await read_topic(fresh_broker, LEDGER_REPARTITION, lambda rs: True, settle=0.5)
    repart_ends = ends((r.partition, r.offset) for r in repartitioned)
    assert await committed(fresh_broker, "ledger", LEDGER_REPARTITION, 4) == {
        p: repart_ends.get(p, 0) for p in range(4)
    }
    # Graceful stops redo no finished work: no order was batched twice.
    seen = batched_ids(got)
    assert [i for i, n in seen.items() if n > 1] == []
    assert set(seen) == want


# -- scale-out --------------------------------------------------------------------------------


async def test_two_workers_split_partitions_and_survive_losing_one(
    fresh_broker: Broker, ledger_build: Path, workers: list[Worker], tmp_path: Path
) -> None:
    every = {(t, p) for t in ("orders", LEDGER_REPARTITION) for p in range(4)}
    await create_topics(fresh_broker, {"orders": 4})
    # Both start at once: they also race to create the app's other topics.
    a = start(workers, ledger_build, fresh_broker, tmp_path / "a.log")
    b = start(workers, ledger_build, fresh_broker, tmp_path / "b.log")

    def split() -> bool:
        held_a, held_b = a.assignment(), b.assignment()
        # Both logs must agree: each holds some, none twice, all covered.
        return bool(held_a and held_b and not held_a & held_b and held_a | held_b == every)

    await wait_until(
        lambda: split() or not (a.alive and b.alive),
        45,
        "two workers to split the partitions",
    )
    assert a.alive and b.alive, a.tail() + b.tail()
    assert not a.assignment() & b.assignment()

    # Kill B in the middle of a steady feed: its partitions and in-flight work move to A.
    feeding = asyncio.ensure_future(trickle(fresh_broker, range(600), seconds=4.0))
    await read_topic(fresh_broker, "batches", lambda rs: len(batched_ids(rs)) >= 100, within=30)
    b.kill()
    await wait_until(
        lambda: a.assignment() == every or not a.alive, 45, "the survivor to take over"
    )
    placed = await feeding
    want = {f"o{i}" for i in range(600)}
    got = await read_topic(
        fresh_broker, "batches", lambda rs: set(batched_ids(rs)) >= want, within=60
    )
    assert set(batched_ids(got)) == want
    await wait_committed(fresh_broker, "ledger", "orders", ends(placed))
    a.signal(signal.SIGTERM)
    assert a.wait(30) == 0, a.tail()


# -- poison pills -----------------------------------------------------------------------------


async def test_poison_pills_go_to_the_dead_letter_topic_and_the_worker_goes_on(
    fresh_broker: Broker, ledger_build: Path, workers: list[Worker], tmp_path: Path
) -> None:
    await create_topics(fresh_broker, {"orders": 4})
    poison: list[tuple[bytes | None, bytes | None]] = [
        (b"acct-1", b"\xff\xfe not json at all"),  # undecodable
        (b"acct-2", b'{"id": "p2"}'),  # valid JSON, missing required fields
        (b"acct-3", b'{"id": "p3", "account_id": "acct-3", "amount": "lots"}'),  # wrong type
        (b"\xff\xfe", json.dumps({"id": "p4", "account_id": "a", "amount": 1.0}).encode()),
    ]
    good = [ledger_order(i) for i in range(40)]
    records = good[:20] + poison + good[20:]
    # All on one partition, so "offsets moved past them" is one number.
    placed = await produce(fresh_broker, "orders", records, partition=2)
    positions = dict(zip(range(len(records)), placed, strict=True))
    poison_at = {positions[20 + i][1]: value for i, (_, value) in enumerate(poison)}

    worker = start(workers, ledger_build, fresh_broker, tmp_path / "ledger.log")
    await joined(worker)
    dead = await read_topic(
        fresh_broker, "ledger-dlq", lambda rs: len(rs) >= len(poison), within=30, settle=0.5
    )
    assert len(dead) == len(poison)
    for r in dead:
        headers = dict(r.headers)
        assert headers["streamc.source.topic"] == b"orders"
        assert headers["streamc.source.partition"] == b"2"
        offset = int(headers["streamc.source.offset"])
        assert poison_at[offset] == r.value  # the original bytes, untouched
        assert headers["streamc.error"], "the error is in the headers"
    assert {int(dict(r.headers)["streamc.source.offset"]) for r in dead} == set(poison_at)

    want = {f"o{i}" for i in range(40)}
    await read_topic(fresh_broker, "batches", lambda rs: set(batched_ids(rs)) >= want, within=30)
    await wait_committed(fresh_broker, "ledger", "orders", ends(placed))
    assert worker.alive, worker.tail()
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.tail()


# -- start-up ---------------------------------------------------------------------------------


async def test_worker_without_a_reachable_broker_exits_with_a_clear_message(
    ledger_build: Path, tmp_path: Path
) -> None:
    import socket

    with socket.socket() as sock:  # a loopback port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    nowhere = Broker("127.0.0.1", port, 0, tmp_path / "none.log")
    worker = Worker(
        "ledger_worker",
        ledger_build,
        nowhere,
        tmp_path / "ledger.log",
        env={"STREAMC_KAFKA_CONNECT_ATTEMPTS": "3", "STREAMC_KAFKA_CONNECT_BACKOFF_S": "0.1"},
    ).start()
    began = time.monotonic()
    assert worker.wait(30) == 1
    assert time.monotonic() - began < 20
    text = worker.text()
    assert f"cannot reach Kafka at 127.0.0.1:{port} after 3 attempt(s)" in text
    assert "STREAMC_BROKER" in text


# -- sinks ------------------------------------------------------------------------------------


async def test_a_sink_returning_a_coroutine_from_a_plain_def_does_its_work_before_commit(
    fresh_broker: Broker,
    workers: list[Worker],
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # apps/receipts.sdl's sink is a plain `def` returning a retry decorator's coroutine: every
    # committed order must have its receipt written.
    built = build(APPS / "receipts.sdl", tmp_path_factory.mktemp("receipts") / "receipts_worker")
    receipts = tmp_path / "receipts.txt"
    receipts.touch()
    await create_topics(fresh_broker, {"orders": 2})
    placed = await produce(fresh_broker, "orders", [ledger_order(i) for i in range(30)])
    worker = Worker(
        "receipts_worker",
        built,
        fresh_broker,
        tmp_path / "receipts.log",
        env={"RECEIPTS_FILE": str(receipts)},
    ).start()
    workers.append(worker)
    await wait_committed(fresh_broker, "receipts", "orders", ends(placed))
    assert sorted(receipts.read_text().split()) == sorted(f"o{i}" for i in range(30))
    assert (await read_topic(fresh_broker, "receipts-dlq", lambda rs: True, settle=0.5)) == []
    assert worker.alive, worker.tail()
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.tail()
    assert "was never awaited" not in worker.text()
