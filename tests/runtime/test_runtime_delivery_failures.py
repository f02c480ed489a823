"""No failure may lose, misroute or corrupt a message.

- A send made by hook code (`Topic.send`) whose delivery fails keeps its source message
  uncommitted until the worker stops: no later commit, the one at shutdown included, passes it.
- A transport failure (timeout, no leader, lost connection) is never bad data: the send is
  retried with backoff, and if it persists the worker stops with the message uncommitted. The
  dead-letter topic gets data errors only.
- A message too large to be dead-lettered whole is dead-lettered truncated, with headers that
  say so, and the worker commits past it: no single message stops a worker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import msgspec
import pytest
from rtkit import Order, Running, gated
from streamc_runtime import App, Stream, Worker
from streamc_runtime.memory import MemoryBroker, MemoryTransport, record_size
from streamc_runtime.transport import Delivery, DeliveryError, TransientTransportError


class _KafkaLikeTransport(MemoryTransport):
    """Deliveries to `failing` topics are pending until a flush, which fails them and raises
    `DeliveryError` once for them (then forgets them), and `commit` flushes first: what the
    Kafka transport does with a record the broker never stored."""

    def __init__(self, broker: MemoryBroker, group_id: str, failing: Sequence[str]) -> None:
        super().__init__(broker, group_id)
        self.failing = set(failing)
        self.pending: list[asyncio.Future[Delivery]] = []

    async def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
        partition: int | None = None,
        timestamp: int | None = None,
    ) -> asyncio.Future[Delivery]:
        if topic not in self.failing:
            return await super().send(topic, value, key, headers, partition, timestamp)  # type: ignore[return-value]
        fut: asyncio.Future[Delivery] = asyncio.get_running_loop().create_future()
        self.pending.append(fut)
        return fut

    async def flush(self) -> None:
        pending, self.pending = self.pending, []
        for fut in pending:
            fut.set_exception(ConnectionError("request timed out"))
        if pending:
            raise DeliveryError(f"{len(pending)} record(s) could not be produced")

    async def commit(self, offsets: Any) -> None:
        await self.flush()
        await super().commit(offsets)


def _alerting_app() -> App:
    """Every order goes through a hook that sends an alert and does not await its delivery."""
    app = App("hooks")
    orders = app.topic("orders", value_type=Order)
    alerts = app.topic("alerts", value_type=Order)

    async def alert(order: Order) -> Order:
        await alerts.send(order)
        return order

    @app.agent(orders)
    async def watch(stream: Stream[Order]) -> None:
        async for _ in stream.process(alert):
            pass

    return app


async def test_a_failed_hook_send_keeps_its_source_uncommitted_through_every_later_commit() -> None:
    app = _alerting_app()
    r = Running(app)
    r.transport = _KafkaLikeTransport(r.broker, app.name, ["alerts"])
    r.worker = Worker(app, r.transport, stats_interval=0, commit_interval=60.0)
    async with r:
        for i in range(3):
            r.produce("orders", {"account_id": f"a{i}", "amount": 1.0})
        await r.idle()
        assert await r.worker.commit() is False  # the flush found the lost alerts
        assert await r.worker.commit() is False  # and the next commit does not go past them
        assert r.committed("orders") == {0: 0}
    assert await r.worker.wait() == 1
    assert r.committed("orders") == {0: 0}  # nor does the one at shutdown


async def test_a_hook_send_failing_at_the_stop_flush_keeps_its_source_uncommitted() -> None:
    app = _alerting_app()
    r = gated(app, failing=["alerts"], fail_late=True)
    async with r:
        for i in range(3):
            r.produce("orders", {"account_id": f"a{i}", "amount": 1.0})
        await r.idle()
    assert await r.worker.wait() == 1
    assert r.committed("orders") == {0: 0}
    assert r.messages("alerts") == []


class _FlakyTransport(MemoryTransport):
    """Sends to `down` topics raise a transient error for their first `failures` attempts
    (None: always), as a producer does while a partition has no leader."""

    def __init__(
        self, broker: MemoryBroker, group_id: str, down: Sequence[str], failures: int | None
    ) -> None:
        super().__init__(broker, group_id)
        self.down = set(down)
        self.failures = failures
        self.attempts = 0

    async def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
        partition: int | None = None,
        timestamp: int | None = None,
    ) -> asyncio.Future[Delivery]:
        if topic in self.down:
            self.attempts += 1
            if self.failures is None or self.attempts <= self.failures:
                raise TransientTransportError("LeaderNotAvailableError")
        return await super().send(topic, value, key, headers, partition, timestamp)  # type: ignore[return-value]


def _forwarding_app(op: str) -> App:
    app = App("fwd")
    orders = app.topic("orders", value_type=Order)
    out = app.topic("out", value_type=Order)

    @app.agent(orders)
    async def forward(stream: Stream[Order]) -> None:
        if op == "echo":
            node = stream.echo(out)
        elif op == "to":
            node = stream.to(out)
        elif op == "through":
            node = stream.through(out)
        else:
            node = stream.group_by(lambda o: o.account_id, topic=out)
        async for _ in node:
            pass

    return app


def _flaky(app: App, down: Sequence[str], failures: int | None) -> Running:
    r = Running(app)
    r.transport = _FlakyTransport(r.broker, app.name, down, failures)
    r.worker = Worker(app,
        r.transport, stats_interval=0, commit_interval=60.0, send_attempts=4, send_backoff=0.001
    )
    return r


OPS = ["echo", "to", "through", "group_by"]


@pytest.mark.parametrize("op", OPS)
async def test_a_transient_send_failure_is_retried_and_nothing_is_dead_lettered(op: str) -> None:
    r = _flaky(_forwarding_app(op), ["out"], failures=3)  # the 4th and last attempt succeeds
    async with r:
        for i in range(3):
            r.produce("orders", {"account_id": f"a{i}", "amount": float(i)})
        await r.idle()
        assert await r.worker.commit() is True
    assert await r.worker.wait() == 0
    assert [o.amount for o in r.values("out", Order)] == [0.0, 1.0, 2.0]
    assert r.messages("fwd-dlq") == []
    assert r.committed("orders") == {0: 3}


@pytest.mark.parametrize("op", OPS)
async def test_a_persistent_transport_failure_stops_the_worker_with_the_offset_uncommitted(
    op: str,
) -> None:
    r = _flaky(_forwarding_app(op), ["out"], failures=None)
    async with r:
        r.produce("orders", {"account_id": "a0", "amount": 0.0})
        assert await asyncio.wait_for(r.worker.wait(), 5) == 1
    assert r.transport.attempts == 4  # type: ignore[attr-defined]  # bounded: then it stops
    assert r.messages("fwd-dlq") == []
    assert r.messages("out") == []
    assert r.committed("orders") == {0: 0}


async def test_a_dead_letter_that_cannot_be_sent_stops_the_worker_with_the_offset_uncommitted() -> (
    None
):
    app = App("fwd")
    orders = app.topic("orders", value_type=Order)

    @app.agent(orders)
    async def consume(stream: Stream[Order]) -> None:
        async for _ in stream:
            pass

    r = _flaky(app, ["fwd-dlq"], failures=None)
    async with r:
        r.produce("orders", {"account_id": "a0", "amount": 1.0})
        r.produce("orders", b"not json", raw=True)  # a data error, for the dead-letter topic
        r.produce("orders", {"account_id": "a2", "amount": 1.0})
        assert await asyncio.wait_for(r.worker.wait(), 5) == 1
    assert r.messages("fwd-dlq") == []
    assert r.committed("orders") == {0: 1}  # up to the message whose dead letter is lost


LIMIT = 2000


def _limited(app: App) -> Running:
    r = Running(app)
    r.transport = MemoryTransport(r.broker, app.name, max_record_size=LIMIT)
    r.worker = Worker(app, r.transport, stats_interval=0, commit_interval=60.0)
    return r


def _headers(message: Any) -> dict[str, bytes]:
    return dict(message.headers)


@pytest.mark.parametrize("why", ["undecodable", "hook", "forward"])
async def test_a_message_too_large_to_dead_letter_whole_goes_truncated_and_is_committed_past(
    why: str,
) -> None:
    app = App("big")
    orders = app.topic("orders", value_type=Order)
    out = app.topic("out", value_type=Order)

    def check(order: Order) -> Order:
        if order.account_id == "big":
            raise ValueError("account too big")
        return order

    @app.agent(orders)
    async def forward(stream: Stream[Order]) -> None:
        async for _ in stream.process(check).to(out) if why == "hook" else stream.to(out):
            pass

    huge = {"account_id": "big", "amount": 1.0, "tags": ["x" * 5000]}
    value = b"{" + b"x" * 5000 if why == "undecodable" else msgspec.json.encode(huge)
    r = _limited(app)
    async with r:
        r.produce("orders", {"account_id": "a0", "amount": 1.0})
        r.produce("orders", value, key=b"k-big", headers=[("trace", b"t-1")], raw=True)
        r.produce("orders", {"account_id": "a2", "amount": 1.0})
        await r.idle()
        assert r.worker.failure is None
        assert await r.worker.commit() is True
    assert await r.worker.wait() == 0
    assert r.committed("orders") == {0: 3}
    assert [o.account_id for o in r.values("out", Order)] == ["a0", "a2"]
    (dead,) = r.messages("big-dlq")
    headers = _headers(dead)
    assert dead.key == b"k-big"
    assert headers["trace"] == b"t-1"  # the original headers are kept
    assert headers["streamc.truncated"] == b"true"
    assert headers["streamc.original.size"] == str(len(value)).encode()
    assert headers["streamc.source.topic"] == b"orders"
    assert headers["streamc.source.partition"] == b"0"
    assert headers["streamc.source.offset"] == b"1"
    assert dead.value is not None and len(dead.value) > LIMIT // 2
    assert value.startswith(dead.value)  # cut, never altered
    assert record_size(dead.key, dead.value, dead.headers) <= LIMIT


async def test_a_message_whose_key_alone_is_too_large_is_dead_lettered_without_it() -> None:
    app = App("big")
    orders = app.topic("orders", value_type=Order)

    @app.agent(orders)
    async def consume(stream: Stream[Order]) -> None:
        async for _ in stream:
            pass

    r = _limited(app)
    async with r:
        r.produce("orders", b"not json", key=b"k" * (LIMIT + 1), raw=True)
        r.produce("orders", {"account_id": "a1", "amount": 1.0})
        await r.idle()
        assert await r.worker.commit() is True
    assert await r.worker.wait() == 0
    assert r.committed("orders") == {0: 2}
    (dead,) = r.messages("big-dlq")
    headers = _headers(dead)
    assert (dead.key, dead.value) == (None, b"")
    assert headers["streamc.truncated"] == b"true"
    assert headers["streamc.original.size"] == b"8"
    assert headers["streamc.source.offset"] == b"0"


async def test_the_memory_transport_refuses_records_above_its_max_record_size() -> None:
    broker = MemoryBroker()
    broker.create_topic("t", 1)
    transport = MemoryTransport(broker, "g", max_record_size=10)
    await transport.send("t", b"12345", b"k", [("h", b"v")])  # 5 + 1 + 2 bytes: fits
    with pytest.raises(Exception, match="larger than max_record_size") as refused:
        await transport.send_many("t", [(None, b"1", ()), (None, b"x" * 11, ()), (None, b"2", ())])
    assert refused.value.indexes == (1,)  # type: ignore[attr-defined]
    assert refused.value.limit == 10  # type: ignore[attr-defined]
    assert [m.value for m in broker.messages("t")] == [b"12345"]  # none of the run was stored


@pytest.mark.parametrize("where", ["processor", "sink"])
async def test_a_hook_send_that_never_goes_out_stops_the_worker_without_a_dead_letter(
    where: str,
) -> None:
    app = App("hooks")
    orders = app.topic("orders", value_type=Order)
    alerts = app.topic("alerts", value_type=Order)

    async def alert(order: Order) -> Order:
        await alerts.send(order)
        return order

    @app.agent(orders)
    async def watch(stream: Stream[Order]) -> None:
        if where == "processor":
            async for _ in stream.process(alert):
                pass
        else:
            async for order in stream:
                await alert(order)

    r = _flaky(app, ["alerts"], failures=None)
    async with r:
        r.produce("orders", {"account_id": "a0", "amount": 1.0})
        assert await asyncio.wait_for(r.worker.wait(), 5) == 1
    assert r.transport.attempts == 4  # type: ignore[attr-defined]
    # The order is valid: only the transport failed, so it must not reach the dead-letter
    # topic; it stays uncommitted and the next owner handles it again.
    assert r.messages("hooks-dlq") == []
    assert r.messages("alerts") == []
    assert r.committed("orders") == {0: 0}
