"""A stateful worker on the real broker restores its table from the changelog when it restarts.

The subject is the `counts` app (apps/counts.sdl): orders counted and summed per account into
the table `totals_by_account`, every update published on `account_totals`. What a restart
must rebuild is observed from outside: the totals published for orders that arrive after the
restart continue from the restored ones, and the worker's log says what each table partition
read (`KafkaTransport.read_partition`, to the fetch's high watermark; an empty changelog
partition ends at once).
"""

from __future__ import annotations

import random
import re
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]
from aiokafka.admin.config_resource import (  # type: ignore[import-untyped]
    ConfigResource,
    ConfigResourceType,
)
from kafkatest import Broker, kafka_partition, wait_until
from tablekit import (
    CHANGELOG,
    ORDERS,
    PARTITIONS,
    PUBLISHED,
    Order,
    Progress,
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
from workers import Worker

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.asyncio]

_RESTORED = re.compile(
    r"restored table totals_by_account\[(\d+)\]: (\d+) records in [\d.]+s \(to offset (\d+)\)"
)
_RESTORING = re.compile(r"restoring table totals_by_account\[(\d+)\] from \S+ at offset (\d+)")


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    """Every worker a test starts, terminated at teardown whatever happened."""
    started: list[Worker] = []
    yield started
    for w in started:
        w.stop()


async def create_orders_topic(broker: Broker) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(ORDERS, PARTITIONS, 1)])
    finally:
        await admin.close()


def restores(
    worker: Worker, since: int | None = None
) -> tuple[dict[int, int], dict[int, tuple[int, int]]]:
    """From the log of the worker's latest start (or from character `since` of its log): per
    table partition, the changelog offset its restore started at, and (records read, offset
    reached) once it was done."""
    text = worker.text()
    text = text.rsplit("--- start", 1)[-1] if since is None else text[since:]
    started = {int(q): int(at) for q, at in _RESTORING.findall(text)}
    done = {int(q): (int(n), int(end)) for q, n, end in _RESTORED.findall(text)}
    return started, done


async def restored(
    worker: Worker,
    within: float = 30,
    since: int | None = None,
    partitions: set[int] = set(range(PARTITIONS)),  # noqa: B006 - never changed
) -> dict[int, tuple[int, int]]:
    """Once the restores of `partitions` are done: what `restores` says of them."""
    await wait_until(
        lambda: set(restores(worker, since)[1]) >= partitions or not worker.alive,
        within,
        f"table partitions {sorted(partitions)} to be restored",
    )
    assert worker.alive, worker.tail()
    return restores(worker, since)[1]


def accounts_in(partitions: set[int], count: int) -> list[str]:
    """`count` account ids whose table partition is in `partitions` (as group_by places them)."""
    out: list[str] = []
    i = 0
    while len(out) < count:
        name = f"acct-{i}"
        if kafka_partition(name.encode(), PARTITIONS) in partitions:
            out.append(name)
        i += 1
    return out


def orders_for(accounts: list[str], n: int, rng: random.Random, prefix: str) -> list[Order]:
    return [
        Order(f"{prefix}{i}", rng.choice(accounts), rng.randrange(1, 4000) / 4) for i in range(n)
    ]


async def run_until_done(broker: Broker, placed: list[tuple[int, int]]) -> None:
    async with Progress(broker) as progress:
        await progress.wait_done(placed)


async def stop(worker: Worker) -> None:
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.tail()


async def changelog_config(broker: Broker) -> dict[str, str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
    await admin.start()
    try:
        [response] = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, CHANGELOG)]
        )
    finally:
        await admin.close()
    [(_, _, _, _, entries)] = response.resources
    return {entry[0]: entry[1] for entry in entries}


@pytest.mark.parametrize("store", ["memory", "rocksdb"])
async def test_a_restarted_worker_restores_its_table_and_counts_on(
    fresh_broker: Broker, workers: list[Worker], tmp_path: Path, store: str
) -> None:
    rng = random.Random(12)
    state_dir = tmp_path / "state" if store == "rocksdb" else None
    log = tmp_path / "counts.log"
    await create_orders_topic(fresh_broker)
    # Accounts of table partitions 0 and 1 only: changelog partitions 2 and 3 stay empty.
    accounts = accounts_in({0, 1}, 20)
    first = orders_for(accounts, 2000, rng, "a")
    placed = await produce_orders(fresh_broker, first)

    worker = start_worker(workers, fresh_broker, log, state_dir)
    await joined(worker)
    # Nothing to restore yet: every partition, empty, ends at offset 0.
    assert await restored(worker) == {q: (0, 0) for q in range(PARTITIONS)}
    await run_until_done(fresh_broker, placed)
    assert published_totals(await read_to_end(fresh_broker, PUBLISHED)) == exact(first)

    # The changelog: compacted, one partition per table partition, one record per order in
    # the partitions of its account plus the skip maps.
    assert (await changelog_config(fresh_broker)).get("cleanup.policy") == "compact"
    ends = await high_watermarks(fresh_broker, CHANGELOG)
    assert sorted(ends) == list(range(PARTITIONS))
    assert ends[2] == ends[3] == 0 and ends[0] + ends[1] > len(first)
    assert changelog_totals(await read_to_end(fresh_broker, CHANGELOG)) == exact(first)
    await stop(worker)

    # Restart: the table comes back from the changelog (a RocksDB store from its checkpoint,
    # written at the stop, so it reads nothing), and the empty partitions end at once.
    second = orders_for(accounts, 1000, rng, "b")
    placed = await produce_orders(fresh_broker, second)
    worker = start_worker(workers, fresh_broker, log, state_dir)
    await joined(worker)
    done = await restored(worker)
    starts = restores(worker)[0]
    if store == "memory":
        assert starts == {q: 0 for q in range(PARTITIONS)}
        assert done == {q: (ends[q], ends[q]) for q in range(PARTITIONS)}
    else:
        assert starts == ends
        assert done == {q: (0, ends[q]) for q in range(PARTITIONS)}
    await run_until_done(fresh_broker, placed)
    published = published_totals(await read_to_end(fresh_broker, PUBLISHED))
    assert published == exact(first + second)  # counted on from the restored totals
    assert changelog_totals(await read_to_end(fresh_broker, CHANGELOG)) == published
    await stop(worker)


async def test_a_state_dir_restores_from_its_checkpoint_then_the_changelog_tail(
    fresh_broker: Broker, workers: list[Worker], tmp_path: Path
) -> None:
    """A store whose checkpoint is behind the changelog (the worker died between its last
    checkpoint and later changelog writes) reads only the records after the checkpoint."""
    rng = random.Random(13)
    state_dir, saved = tmp_path / "state", tmp_path / "saved"
    log = tmp_path / "counts.log"
    await create_orders_topic(fresh_broker)
    accounts = [f"acct-{i}" for i in range(40)]
    first = make_orders(3000, 40, rng, "a")
    placed = await produce_orders(fresh_broker, first)
    worker = start_worker(workers, fresh_broker, log, state_dir)
    await joined(worker)
    await run_until_done(fresh_broker, placed)
    await stop(worker)
    checkpointed = await high_watermarks(fresh_broker, CHANGELOG)
    shutil.copytree(state_dir, saved)  # the stores as checkpointed now

    second = orders_for(accounts, 2000, rng, "b")
    placed = await produce_orders(fresh_broker, second)
    worker = start_worker(workers, fresh_broker, log, state_dir)
    await joined(worker)
    await run_until_done(fresh_broker, placed)
    await stop(worker)
    ends = await high_watermarks(fresh_broker, CHANGELOG)
    assert all(ends[q] > checkpointed[q] for q in range(PARTITIONS))

    # Back to the older checkpoint: the changelog holds more than the stores now.
    shutil.rmtree(state_dir)
    shutil.copytree(saved, state_dir)
    third = orders_for(accounts, 1000, rng, "c")
    placed = await produce_orders(fresh_broker, third)
    worker = start_worker(workers, fresh_broker, log, state_dir)
    await joined(worker)
    done = await restored(worker)
    assert restores(worker)[0] == checkpointed
    assert done == {q: (ends[q] - checkpointed[q], ends[q]) for q in range(PARTITIONS)}
    await run_until_done(fresh_broker, placed)
    published = published_totals(await read_to_end(fresh_broker, PUBLISHED))
    assert published == exact(first + second + third)
    assert changelog_totals(await read_to_end(fresh_broker, CHANGELOG)) == published
    await stop(worker)


async def test_a_changelog_with_fewer_partitions_than_the_table_stops_the_worker(
    fresh_broker: Broker, workers: list[Worker], tmp_path: Path
) -> None:
    """Left from a version of the app whose table had fewer partitions: the restore of a
    partition the changelog lacks fails the worker, instead of leaving it waiting for ever."""
    admin = AIOKafkaAdminClient(bootstrap_servers=fresh_broker.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(ORDERS, PARTITIONS, 1), NewTopic(CHANGELOG, 2, 1)])
    finally:
        await admin.close()
    worker = start_worker(workers, fresh_broker, tmp_path / "counts.log")
    assert worker.wait(60) == 1, worker.tail()
    assert re.search(rf"topic '{CHANGELOG}' has no partition [23] \(it has 2\)", worker.text())
