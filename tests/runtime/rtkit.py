"""Shared helpers of the runtime tests: apps are written by hand, as generated code would write
them, and run on the in-memory broker."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import TracebackType
from typing import Any

import msgspec
from streamc_runtime import App, Record
from streamc_runtime.app import Worker
from streamc_runtime.local import until_idle
from streamc_runtime.memory import MemoryBroker, MemoryTransport
from streamc_runtime.transport import TP, Message


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
            self.broker.create_topic(topic.name, topic.partitions)
        options.setdefault("stats_interval", 0)
        options.setdefault("commit_interval", 60.0)  # tests commit explicitly
        self.transport = MemoryTransport(self.broker, app.name)
        self.worker: Worker = app.worker(self.transport, **options)

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

    async def idle(self) -> None:
        await asyncio.wait_for(until_idle(self.worker), 5)

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
