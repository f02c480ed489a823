"""Shared helpers of the runtime tests: apps are written by hand, as generated code would write
them, and run on the in-memory broker."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

import msgspec
import pytest
from streamc_runtime import App, Record
from streamc_runtime.local import until_idle
from streamc_runtime.memory import MemoryBroker, MemoryTransport
from streamc_runtime.offsets import PartitionOffsets
from streamc_runtime.transport import TP, Delivery, Message
from streamc_runtime.worker import Worker


class Order(Record, kw_only=True):
    account_id: str
    amount: float
    language: str | None = None
    tags: list[str] = msgspec.field(default_factory=list)


class Running:
    """An app's worker on a memory broker, started and stopped by `async with`."""

    def __init__(self, app: App, broker: MemoryBroker | None = None, **options: Any) -> None:
        self.app = app
        self.broker = broker if broker is not None else MemoryBroker()
        for topic in app.topics.values():
            self.broker.create_topic(topic.name, topic.partitions, topic.config)
        options.setdefault("stats_interval", 0)
        options.setdefault("commit_interval", 60.0)  # tests commit explicitly
        self.transport = MemoryTransport(self.broker, app.name)
        self.worker: Worker = Worker(app, self.transport, **options)

    async def __aenter__(self) -> Running:
        await self.worker.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.worker.stop()

    def produce(
        self,
        topic: str,
        value: Any,
        *,
        key: bytes | str | None = None,
        partition: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        raw: bool = False,
    ) -> None:
        data = value if raw else msgspec.json.encode(value)
        if isinstance(key, str):
            key = key.encode()
        self.broker.produce(topic, data, key, headers or [], partition)

    async def idle(self, limit: float = 30) -> None:
        # A guard against a hang, not a speed test: a loaded machine may take its time.
        await asyncio.wait_for(until_idle(self.worker), limit)

    def messages(self, topic: str) -> list[Message]:
        return self.broker.messages(topic)

    def values(self, topic: str, type_: Any = Any) -> list[Any]:
        return [msgspec.json.decode(m.value or b"null", type=type_) for m in self.messages(topic)]

    def committed(self, topic: str) -> dict[int, int]:
        """Committed offset per partition (0 where nothing was ever committed)."""
        n = self.broker.partitions_for(topic) or 0
        return {p: self.broker.committed(self.app.name, TP(topic, p)) or 0 for p in range(n)}

    def end_offsets(self, topic: str) -> dict[int, int]:
        n = self.broker.partitions_for(topic) or 0
        return {p: self.broker.end_offset(TP(topic, p)) for p in range(n)}


async def wait_for(cond: Callable[[], bool], within: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not cond():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.001)


class GatedTransport(MemoryTransport):
    """Records land in the broker at once, but their deliveries to `gated` topics resolve only
    on `release()`, and those to `failing` topics fail (as an already failed future, or later
    when `fail_late`)."""

    def __init__(
        self,
        broker: MemoryBroker,
        group_id: str,
        gated: Sequence[str] = (),
        failing: Sequence[str] = (),
        fail_late: bool = False,
    ) -> None:
        super().__init__(broker, group_id)
        self.gated, self.failing, self.fail_late = set(gated), set(failing), fail_late
        self.pending: list[tuple[asyncio.Future[Delivery], Delivery | None]] = []

    async def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
        partition: int | None = None,
        timestamp: int | None = None,
    ) -> asyncio.Future[Delivery]:
        fut: asyncio.Future[Delivery] = asyncio.get_running_loop().create_future()
        if topic in self.failing:
            if self.fail_late:
                self.pending.append((fut, None))
            else:
                fut.set_exception(ConnectionError(f"{topic}: not delivered"))
            return fut
        delivery = self.broker.produce(topic, value, key, headers, partition, timestamp)
        if topic in self.gated:
            self.pending.append((fut, delivery))
        else:
            fut.set_result(delivery)
        return fut

    def release(self) -> None:
        pending, self.pending = self.pending, []
        for fut, delivery in pending:
            if fut.done():
                continue
            if delivery is None:
                fut.set_exception(ConnectionError("not delivered"))
            else:
                fut.set_result(delivery)

    async def flush(self) -> None:
        self.release()


def gated(app: App, gated: Sequence[str] = (), **kwargs: Any) -> Running:
    r = Running(app)
    failing = kwargs.pop("failing", ())
    fail_late = kwargs.pop("fail_late", False)
    r.transport = GatedTransport(r.broker, app.name, gated, failing, fail_late)
    kwargs.setdefault("stats_interval", 0)
    kwargs.setdefault("commit_interval", 60.0)
    r.worker = Worker(app, r.transport, **kwargs)
    return r


def release_topic(r: Running, topic: str) -> None:
    """Resolve the gated deliveries of `topic` only."""
    transport = r.transport
    assert isinstance(transport, GatedTransport)
    keep = []
    for fut, delivery in transport.pending:
        if delivery is not None and delivery.topic == topic:
            fut.set_result(delivery)
        else:
            keep.append((fut, delivery))
    transport.pending = keep


def spy_acks(monkeypatch: pytest.MonkeyPatch) -> Counter[tuple[str, str]]:
    """(topic, method) -> calls of `hold`, `release` and `release_members`, over every
    partition's offsets."""
    calls: Counter[tuple[str, str]] = Counter()
    for name in ("hold", "release", "release_members"):
        method = getattr(PartitionOffsets, name)

        def spy(self: PartitionOffsets, *args: int, _name: str = name, _m: object = method) -> None:
            calls[self.tp.topic, _name] += 1
            _m(self, *args)  # type: ignore[operator]

        monkeypatch.setattr(PartitionOffsets, name, spy)
    return calls
