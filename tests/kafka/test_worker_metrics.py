"""`--metrics-port` on a real broker: a generated worker process, scraped from outside as
Prometheus would, while it works off a backlog."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
from collections.abc import Iterable
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]
from kafkatest import Broker
from prometheus_client.parser import text_string_to_metric_families
from workers import Worker, build, committed, ends, produce, wait_committed

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.asyncio]

APPS = Path(__file__).parent / "apps"
N = 600
POISON = 3


@pytest.fixture(scope="module")
def metered_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(APPS / "metered.sdl", tmp_path_factory.mktemp("metered") / "metered_worker")


@pytest.fixture
def workers() -> Iterable[list[Worker]]:
    started: list[Worker] = []
    yield started
    for w in started:
        w.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def get(port: int, path: str) -> tuple[int, str] | None:
    """The status and body, or None while nothing listens yet."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return None
    writer.write(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, body = data.decode().partition("\r\n\r\n")
    return int(head.split()[1]), body


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(port: int) -> Samples:
    got = await get(port, "/metrics")
    assert got is not None and got[0] == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(got[1])
        for s in family.samples
    }


def by_partition(samples: Samples, name: str) -> dict[int, float]:
    return {
        int(dict(labels)["partition"]): value
        for (metric, labels), value in samples.items()
        if metric == name and dict(labels)["topic"] == "orders"
    }


def order(i: int) -> tuple[bytes, bytes]:
    account = f"acct-{i % 7}"
    return account.encode(), json.dumps(
        {"id": f"o{i}", "account_id": account, "amount": 1.0}
    ).encode()


async def test_scraped_metrics_follow_a_backlog_on_kafka_until_the_lag_is_zero(
    fresh_broker: Broker, metered_build: Path, workers: list[Worker], tmp_path: Path
) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=fresh_broker.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic("orders", 2, 1)])
    finally:
        await admin.close()
    records = [order(i) for i in range(N)]
    records[100:100] = [(b"acct-0", b"\xff not json")] * POISON
    placed = await produce(fresh_broker, "orders", records)
    port = free_port()
    worker = Worker(
        "metered_worker",
        metered_build,
        fresh_broker,
        tmp_path / "metered.log",
        args=("--commit-interval", "0.5", "--metrics-port", str(port)),
    ).start()
    workers.append(worker)

    # /readyz says no until the group has assigned partitions, which the log records first.
    answers: list[tuple[int, str, bool]] = []
    while True:
        assert worker.alive, worker.tail()
        got = await get(port, "/readyz")
        if got is not None:
            answers.append((*got, bool(worker.assignment())))
            if got[0] == 200:
                break
        await asyncio.sleep(0.02)
    assert answers[0][0] == 503, answers[:3]
    assert "waiting for a partition assignment\n" in {body for _, body, _ in answers}
    assert answers[-1] == (200, "ok\n", True)
    assert all(not assigned for status, _, assigned in answers if status == 503)

    # The backlog (2.4 s of sink time) shows as lag, which then falls to zero.
    lags: list[int] = []

    def lag(samples: Samples) -> int:
        return int(sum(by_partition(samples, "streamc_consumer_lag").values()))

    async def drained() -> bool:
        samples = await scrape(port)
        if len(by_partition(samples, "streamc_consumer_lag")) == 2:
            lags.append(lag(samples))
        return bool(lags) and lags[-1] == 0

    for _ in range(600):
        if await drained():
            break
        await asyncio.sleep(0.05)
    assert lags and lags[-1] == 0, lags
    assert max(lags) > 0, lags
    assert lags == sorted(lags, reverse=True), "a backlog with no new input only shrinks"

    end = ends(placed)
    await wait_committed(fresh_broker, "metered", "orders", end)
    samples = await scrape(port)
    assert worker.alive, worker.tail()
    total = N + POISON

    def one(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert one("streamc_messages_in_total", topic="orders") == total
    assert one("streamc_agent_elements_total", agent="settle") == N
    assert one("streamc_agent_dead_letters_total", agent="settle") == POISON
    assert one("streamc_agent_hook_errors_total", agent="settle") == 0
    assert one("streamc_messages_out_total", topic="metered-dlq") == POISON
    assert one("streamc_messages_in_flight") == 0
    assert one("streamc_assigned_partitions") == 2
    assert one("streamc_rebalances_total") == 1
    assert one("streamc_commit_seconds_count") >= 1
    # What the worker reports as committed is what the group holds on the broker.
    assert by_partition(samples, "streamc_partition_committed_offset") == {
        p: float(o) for p, o in end.items()
    }
    assert await committed(fresh_broker, "metered", "orders", 2) == end
    assert by_partition(samples, "streamc_partition_high_watermark") == {
        p: float(o) for p, o in end.items()
    }
    assert one("streamc_agent_processing_seconds_count", agent="settle") > 0
    assert one("streamc_process_cpu_seconds_total") > 0

    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.tail()
