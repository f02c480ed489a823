"""Helpers shared by the kafka tests (the broker fixture itself is in conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamc_runtime.kafka import KafkaTransport
from streamc_runtime.transport import TP

# Short group timeouts: Tansu answers a first join after half the session timeout, and a dead
# member's partitions move only after it. Production defaults are in KafkaSettings.
FAST_GROUP: dict[str, Any] = {
    "session_timeout_ms": 2000,
    "heartbeat_interval_ms": 300,
    "fetch_max_wait_ms": 100,
    # Tansu cannot serve aiokafka's InitProducerId; at-least-once does not need it.
    "enable_idempotence": False,
    "connect_attempts": 3,
    "connect_backoff_s": 0.2,
}

# The same, for worker subprocesses (which read only the environment).
FAST_GROUP_ENV: dict[str, str] = {
    "STREAMC_KAFKA_" + k.upper(): str(v).lower() if isinstance(v, bool) else str(v)
    for k, v in FAST_GROUP.items()
}


@dataclass(frozen=True)
class Broker:
    host: str
    port: int
    pid: int
    log: Path

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"kafka://{self.host}:{self.port}"


@contextlib.asynccontextmanager
async def open_transport(
    broker: Broker, group_id: str, **overrides: Any
) -> AsyncIterator[KafkaTransport]:
    settings = {**FAST_GROUP, **overrides}
    transport = KafkaTransport.from_url(broker.url, group_id=group_id, **settings)
    await transport.start()
    try:
        yield transport
    finally:
        await transport.stop()


class RecordingListener:
    """A `RebalanceListener` that remembers what it was told and can commit on revoke."""

    def __init__(self, on_revoke: Callable[[frozenset[TP]], Any] | None = None) -> None:
        self.assigned: frozenset[TP] = frozenset()
        self.history: list[tuple[str, frozenset[TP]]] = []
        self._on_revoke = on_revoke
        self.changed = asyncio.Event()

    async def on_partitions_revoked(self, revoked: Collection[TP]) -> None:
        tps = frozenset(revoked)
        self.history.append(("revoked", tps))
        if self._on_revoke is not None:
            result = self._on_revoke(tps)
            if asyncio.iscoroutine(result):
                await result
        self.assigned = self.assigned - tps

    async def on_partitions_assigned(self, assigned: Collection[TP]) -> None:
        self.assigned = frozenset(assigned)
        self.history.append(("assigned", self.assigned))
        self.changed.set()


async def wait_until(predicate: Callable[[], bool], within: float, what: str) -> None:
    """Poll `predicate` (never a fixed sleep): group changes on Tansu take seconds."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.05)


def murmur2(data: bytes) -> int:
    """Kafka's `Utils.murmur2`, written out independently of aiokafka (signed 32-bit)."""
    m, r = 0x5BD1E995, 24
    length = len(data)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    for i in range(0, length - length % 4, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    tail = length % 4
    base = length - tail
    if tail >= 3:
        h ^= data[base + 2] << 16
    if tail >= 2:
        h ^= data[base + 1] << 8
    if tail >= 1:
        h ^= data[base]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def kafka_partition(key: bytes, partitions: int) -> int:
    """The Java client's default partition for a keyed record."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions
