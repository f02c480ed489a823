"""`--metrics-port`: the collector's figures and the HTTP endpoints, on the memory broker."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from rtkit import Order, Running, wait_for
from streamc_runtime import App, Stream, Worker
from streamc_runtime.latency import Latency
from streamc_runtime.logs import JsonFormatter
from streamc_runtime.memory import MemoryTransport
from streamc_runtime.metrics import MetricsServer
from streamc_runtime.probe import main as probe


async def get(port: int, path: str, method: str = "GET") -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, body = data.decode().partition("\r\n\r\n")
    return int(head.split()[1]), body


async def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, body = await get(port, "/metrics")
    assert status == 200
    out = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def copy_app() -> App:
    """`orders` (2 partitions) through a processor that rejects negative amounts, to `out`."""
    app = App("m")
    orders = app.topic("orders", key_type=str, value_type=Order, partitions=2)
    out = app.topic("out", key_type=str, value_type=Order, partitions=1)

    def check(order: Order) -> Order:
        if order.amount < 0:
            raise ValueError("negative")
        return order

    @app.agent(orders, name="copy")
    async def copy(stream: Stream[Order]) -> None:
        async for _ in stream.process(check).to(out):
            pass

    return app


@pytest.fixture
async def served() -> AsyncIterator[tuple[Running, MetricsServer]]:
    running = Running(copy_app())
    server = MetricsServer(running.worker, "127.0.0.1", 0)
    await server.start()
    try:
        async with running:
            yield running, server
    finally:
        await server.close()


def one(metrics: dict[Any, float], name: str, **labels: str) -> float:
    return metrics[(name, tuple(sorted(labels.items())))]


async def test_metrics_count_what_was_consumed_sent_and_dead_lettered(
    served: tuple[Running, MetricsServer],
) -> None:
    r, server = served
    for i in range(10):
        r.produce("orders", {"account_id": "a", "amount": -1 if i == 3 else i}, key=str(i))
    r.produce("orders", b"not json", raw=True, key="x")
    await r.idle()
    assert await r.worker.commit()
    m = await scrape(server.port)
    assert one(m, "streamc_messages_in_total", topic="orders") == 11
    assert one(m, "streamc_messages_out_total", topic="out") == 9
    assert one(m, "streamc_messages_out_total", topic="m-dlq") == 2
    # The undecodable message never reaches the agent; the negative one does, and fails.
    assert one(m, "streamc_agent_elements_total", agent="copy") == 10
    assert one(m, "streamc_agent_dead_letters_total", agent="copy") == 2
    assert one(m, "streamc_agent_hook_errors_total", agent="copy") == 1
    assert one(m, "streamc_messages_in_flight") == 0
    assert one(m, "streamc_rebalances_total") == 1
    assert one(m, "streamc_assigned_partitions") == 2
    assert one(m, "streamc_commit_seconds_count") == 1
    assert one(m, "streamc_commit_failures_total") == 0
    ends = r.end_offsets("orders")
    assert sum(ends.values()) == 11
    for p, end in ends.items():
        assert one(m, "streamc_partition_committed_offset", topic="orders", partition=str(p)) == end
        assert one(m, "streamc_partition_high_watermark", topic="orders", partition=str(p)) == end
        assert one(m, "streamc_consumer_lag", topic="orders", partition=str(p)) == 0
    assert one(m, "streamc_worker_ready") == 1
    assert one(m, "streamc_process_resident_memory_bytes") > 0


async def test_messages_in_are_counted_per_topic_when_an_agent_reads_several() -> None:
    app = App("two")
    a = app.topic("a", key_type=str, value_type=int, partitions=2)
    b = app.topic("b", key_type=str, value_type=int, partitions=1)

    @app.agent(a & b, name="both")
    async def both(stream: Stream[int]) -> None:
        async for _ in stream:
            pass

    async with Running(app) as r:
        server = MetricsServer(r.worker, "127.0.0.1", 0)
        await server.start()
        try:
            for i in range(7):
                r.produce("a", i, key=str(i))
            for i in range(4):
                r.produce("b", i, key=str(i))
            await r.idle()
            m = await scrape(server.port)
        finally:
            await server.close()
    assert one(m, "streamc_messages_in_total", topic="a") == 7
    assert one(m, "streamc_messages_in_total", topic="b") == 4
    assert one(m, "streamc_agent_elements_total", agent="both") == 11


async def test_lag_counts_the_backlog_and_falls_to_zero_once_it_is_processed() -> None:
    app = App("slow")
    t = app.topic("t", key_type=str, value_type=int, partitions=1)
    gate = asyncio.Event()

    @app.agent(t, name="slow")
    async def slow(stream: Stream[int]) -> None:
        async for _ in stream:
            await gate.wait()

    async with Running(app) as r:
        server = MetricsServer(r.worker, "127.0.0.1", 0)
        await server.start()
        try:
            for i in range(20):
                r.produce("t", i, key="k")
            await wait_for(lambda: r.worker.events_in == 20)
            m = await scrape(server.port)
            assert one(m, "streamc_consumer_lag", topic="t", partition="0") == 20
            assert one(m, "streamc_messages_in_flight") == 20
            assert one(m, "streamc_messages_buffered") == 19  # one is in the agent's hands
            assert one(m, "streamc_agent_elements_total", agent="slow") == 1
            gate.set()
            await r.idle()
            m = await scrape(server.port)
            assert one(m, "streamc_consumer_lag", topic="t", partition="0") == 0
            assert one(m, "streamc_agent_elements_total", agent="slow") == 20
        finally:
            await server.close()


class HeldAssignment(MemoryTransport):
    """Assignments wait for `release`: the worker runs, but has no partitions yet."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = asyncio.Event()

    async def _sync_group(self) -> None:
        await self.gate.wait()
        await super()._sync_group()


async def test_readyz_turns_ready_only_after_the_assignment() -> None:
    r = Running(copy_app())
    transport = HeldAssignment(r.broker, "m")
    r.transport = transport
    r.worker = Worker(r.app, transport, stats_interval=0, commit_interval=60.0)
    server = MetricsServer(r.worker, "127.0.0.1", 0)
    await server.start()
    try:
        assert await get(server.port, "/readyz") == (503, "not running (starting or stopping)\n")
        assert await get(server.port, "/healthz") == (200, "ok\n")
        async with r:
            assert r.worker.running
            for _ in range(20):  # the fetch loop turns, the group does not answer
                await asyncio.sleep(0)
            assert await get(server.port, "/readyz") == (
                503,
                "waiting for a partition assignment\n",
            )
            transport.gate.set()
            await wait_for(lambda: r.worker.assigned)
            assert await get(server.port, "/readyz") == (200, "ok\n")
            m = await scrape(server.port)
            assert one(m, "streamc_worker_ready") == 1
    finally:
        await server.close()


async def test_healthz_fails_once_the_worker_has_failed(
    served: tuple[Running, MetricsServer],
) -> None:
    r, server = served
    assert await get(server.port, "/healthz") == (200, "ok\n")
    r.worker.fail(RuntimeError("disk on fire"))
    assert await get(server.port, "/healthz") == (503, "failed: RuntimeError: disk on fire\n")


async def test_endpoints_answer_head_and_refuse_other_paths_and_methods(
    served: tuple[Running, MetricsServer],
) -> None:
    _, server = served
    assert await get(server.port, "/healthz", "HEAD") == (200, "")
    assert (await get(server.port, "/nope"))[0] == 404
    assert (await get(server.port, "/metrics", "POST"))[0] == 405


async def test_a_sampled_element_is_timed_from_hand_out_to_the_next_pull() -> None:
    app = App("timed")
    t = app.topic("t", key_type=str, value_type=int, partitions=1)

    @app.agent(t, name="timed")
    async def timed(stream: Stream[int]) -> None:
        async for _ in stream:
            await asyncio.sleep(0.02)

    async with Running(app) as r:
        r.worker.sources["timed"].sample = True  # what the sampler does, ten times a second
        for i in range(3):
            r.produce("t", i, key="k")
        await r.idle()
        latency = r.worker.sources["timed"].latency
    # Exactly one element was timed, and it took the agent its 20 ms.
    assert latency.count == 1
    assert 0.02 <= latency.sum < 0.5


def test_latency_buckets_are_cumulative_and_inclusive() -> None:
    latency = Latency()
    for seconds in (0.001, 0.001, 0.003, 20.0):
        latency.observe(seconds)
    buckets = dict(latency.cumulative())
    assert buckets["0.0005"] == 0
    assert buckets["0.001"] == 2  # `le` includes the bound
    assert buckets["0.005"] == 3
    assert buckets["10.0"] == 3
    assert buckets["+Inf"] == 4
    assert latency.sum == pytest.approx(20.005)


async def test_dead_letter_logs_one_json_line_with_its_position_and_no_traceback(
    served: tuple[Running, MetricsServer], caplog: pytest.LogCaptureFixture
) -> None:
    r, _ = served
    caplog.set_level(logging.INFO, logger="streamc")
    r.produce("orders", {"account_id": "a", "amount": -5}, key="k", partition=1)
    await r.idle()
    dead = [rec for rec in caplog.records if rec.getMessage().startswith("dead letter")]
    assert len(dead) == 1 and dead[0].exc_info is None
    assert not [rec for rec in caplog.records if rec.levelno >= logging.INFO and rec.exc_info]
    line = JsonFormatter("m").format(dead[0])
    assert "\n" not in line
    record = json.loads(line)
    assert {
        k: record[k] for k in ("level", "logger", "app", "agent", "topic", "partition", "offset")
    } == {
        "level": "WARNING",
        "logger": "streamc",
        "app": "m",
        "agent": "copy",
        "topic": "orders",
        "partition": 1,
        "offset": 0,
    }
    assert record["message"] == "dead letter: orders[1]@0 (agent copy): ValueError: negative"


async def test_dead_letter_traceback_is_logged_at_debug_level(
    served: tuple[Running, MetricsServer], caplog: pytest.LogCaptureFixture
) -> None:
    r, _ = served
    caplog.set_level(logging.DEBUG, logger="streamc")
    r.produce("orders", {"account_id": "a", "amount": -5}, key="k", partition=0)
    await r.idle()
    traced = [rec for rec in caplog.records if rec.exc_info]
    assert [rec.levelno for rec in traced] == [logging.DEBUG]
    record = json.loads(JsonFormatter("m").format(traced[0]))
    assert record["offset"] == 0 and "ValueError: negative" in record["exc_info"]


def test_json_log_lines_name_the_agent_whose_task_logs() -> None:
    """A hook's own log call, inside an agent's task, gets the agent from its context."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("app1"))
    log = logging.getLogger("test.hooks")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    app = App("app1")
    t = app.topic("t", key_type=str, value_type=int, partitions=1)

    @app.agent(t, name="talker")
    async def talker(stream_: Stream[int]) -> None:
        async for value in stream_:
            log.info("got %d", value)

    async def run() -> None:
        async with Running(app) as r:
            r.produce("t", 7, key="k")
            await r.idle()

    try:
        asyncio.run(run())
    finally:
        log.removeHandler(handler)
    (line,) = stream.getvalue().splitlines()
    record = json.loads(line)
    assert (record["app"], record["agent"], record["message"]) == ("app1", "talker", "got 7")


async def test_probe_exits_0_on_a_healthy_worker_and_1_when_nothing_answers(
    served: tuple[Running, MetricsServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, server = served
    monkeypatch.setenv("STREAMC_METRICS_PORT", str(server.port))
    assert await asyncio.to_thread(probe, ["healthz"]) == 0
    assert await asyncio.to_thread(probe, ["readyz"]) == 0
    await server.close()
    assert await asyncio.to_thread(probe, ["healthz"]) == 1


def test_worker_main_serves_metrics_and_logs_json(tmp_path: Path) -> None:
    """`--metrics-port 0 --log-format json` end to end: every log line is JSON, the first
    names the port, and /healthz answers while the worker runs."""
    script = tmp_path / "w.py"
    script.write_text(
        "import sys\n"
        "from streamc_runtime import App, worker_main\n"
        "app = App('cli')\n"
        "t = app.topic('t', key_type=str, value_type=int)\n"
        "@app.agent(t)\n"
        "async def a(stream):\n"
        "    async for _ in stream:\n"
        "        pass\n"
        "sys.exit(worker_main(app))\n"
    )
    proc = subprocess.Popen(
        [sys.executable, str(script), "--metrics-port", "0"],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "STREAMC_BROKER": "memory://", "STREAMC_LOG_FORMAT": "json"},
    )
    assert proc.stderr is not None
    lines = []
    port = None
    for raw in proc.stderr:
        lines.append(json.loads(raw))
        if lines[-1]["message"].startswith("metrics on http://127.0.0.1:"):
            port = int(lines[-1]["message"].rsplit(":", 1)[1].split("/")[0])
        if "started" in lines[-1]["message"]:
            break
    assert port is not None, lines
    try:
        assert asyncio.run(get(port, "/healthz")) == (200, "ok\n")
        ready = None
        for _ in range(100):  # the memory broker assigns at the first fetch
            ready = asyncio.run(get(port, "/readyz"))
            if ready[0] == 200:
                break
            time.sleep(0.05)
        assert ready == (200, "ok\n")
    finally:
        proc.terminate()
        rest = proc.stderr.read()
    assert proc.wait(10) == 0
    assert all(json.loads(line)["app"] == "cli" for line in rest.splitlines())


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--metrics-port", "70000"], {}, "must be a port from 0 to 65535"),
        ([], {"STREAMC_METRICS_PORT": "http"}, "STREAMC_METRICS_PORT: not a port number"),
        (["--log-format", "xml"], {}, "invalid choice: 'xml'"),
        ([], {"STREAMC_LOG_FORMAT": "xml"}, "unknown log format 'xml' in STREAMC_LOG_FORMAT"),
    ],
)
def test_bad_metrics_and_log_settings_exit_2(
    argv: list[str],
    env: dict[str, str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from streamc_runtime import worker_main

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert worker_main(App("x"), argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


class SlowRestore(MemoryTransport):
    """Changelog reads (table restores) wait for `gate`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = asyncio.Event()

    async def read_partition(  # type: ignore[override]
        self, topic: str, partition: int, start: int
    ) -> AsyncIterator[Any]:
        await self.gate.wait()
        async for chunk in super().read_partition(topic, partition, start):
            yield chunk


async def test_readyz_waits_for_table_restores_and_metrics_show_their_progress() -> None:
    from statekit import totals_app

    r = Running(totals_app(partitions=2))
    transport = SlowRestore(r.broker, "shop")
    r.transport = transport
    r.worker = Worker(r.app, transport, stats_interval=0, commit_interval=60.0)
    server = MetricsServer(r.worker, "127.0.0.1", 0)
    await server.start()
    try:
        async with r:
            await wait_for(lambda: r.worker.assigned)
            assert await get(server.port, "/readyz") == (
                503,
                "restoring totals[0], totals[1]\n",
            )
            m = await scrape(server.port)
            assert one(m, "streamc_table_partitions", table="totals", state="restoring") == 2
            assert one(m, "streamc_table_partitions", table="totals", state="ready") == 0
            assert one(m, "streamc_worker_ready") == 0
            transport.gate.set()
            for i, account in enumerate(["a", "b", "c", "a"]):
                r.produce("orders", {"account_id": account, "amount": float(i)}, key=account)
            await r.idle()
            assert await get(server.port, "/readyz") == (200, "ok\n")
            m = await scrape(server.port)
    finally:
        await server.close()
    assert one(m, "streamc_table_partitions", table="totals", state="restoring") == 0
    assert one(m, "streamc_table_partitions", table="totals", state="ready") == 2
    assert one(m, "streamc_table_rows", table="totals") == 3
    assert (
        one(m, "streamc_messages_out_total", topic="shop-totals-orders-account_id-repartition") == 4
    )
    assert (
        one(m, "streamc_messages_in_total", topic="shop-totals-orders-account_id-repartition") == 4
    )
    assert one(m, "streamc_messages_out_total", topic="account_totals") == 4
    assert one(m, "streamc_agent_elements_total", agent="totals") == 4


def test_healthz_does_not_answer_while_the_event_loop_is_blocked(tmp_path: Path) -> None:
    """The endpoints run on the worker's loop: a hook blocking it makes the probe time out."""
    script = tmp_path / "w.py"
    script.write_text(
        "import asyncio, sys, time\n"
        "from streamc_runtime import App, worker_main\n"
        "app = App('blocked')\n"
        "t = app.topic('t', key_type=str, value_type=int)\n"
        "@app.agent(t)\n"
        "async def a(stream):\n"
        "    asyncio.get_running_loop().call_later(2.0, time.sleep, 4.0)  # a blocking hook\n"
        "    async for _ in stream:\n"
        "        pass\n"
        "sys.exit(worker_main(app))\n"
    )
    proc = subprocess.Popen(
        [sys.executable, str(script), "--metrics-port", "0", "--log-format", "json"],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "STREAMC_BROKER": "memory://"},
    )
    assert proc.stderr is not None
    port = None
    for raw in proc.stderr:
        message = json.loads(raw)["message"]
        if message.startswith("metrics on http://127.0.0.1:"):
            port = int(message.rsplit(":", 1)[1].split("/")[0])
        if "started" in message:
            break
    assert port is not None
    started = time.monotonic()

    def healthz(timeout: float) -> int | None:
        try:
            return asyncio.run(asyncio.wait_for(get(port, "/healthz"), timeout))[0]
        except TimeoutError:
            return None

    try:
        assert healthz(0.5) == 200
        time.sleep(max(0.0, started + 3.0 - time.monotonic()))  # inside the 4 s block
        assert healthz(0.5) is None
        assert healthz(6.0) == 200  # answered once the loop turns again
    finally:
        proc.terminate()
        proc.stderr.read()
    assert proc.wait(10) == 0
