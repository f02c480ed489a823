"""A changelog restore that fails or is cancelled mid-read closes its partition reader at once
(on Kafka the reader holds a consumer), not whenever the collector finalizes it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence

import pytest
from streamc_runtime.memory import MemoryBroker, MemoryMessage, MemoryTransport
from streamc_runtime.state.changelog import restore
from streamc_runtime.state.memory import MemoryStore
from streamc_runtime.transport import Message


class _WatchedReads(MemoryTransport):
    def __init__(self, broker: MemoryBroker) -> None:
        super().__init__(broker, "g")
        self.closed: list[bool] = []

    async def read_partition(
        self, topic: str, partition: int, start: int
    ) -> AsyncGenerator[Sequence[MemoryMessage], None]:
        try:
            async for batch in super().read_partition(topic, partition, start):
                yield batch
        finally:
            self.closed.append(True)


def _broker() -> MemoryBroker:
    broker = MemoryBroker()
    broker.create_topic("log", 1)
    for n in range(3):
        broker.produce("log", b"1", f"k{n}".encode(), partition=0)
    return broker


async def test_a_restore_whose_batch_check_fails_closes_its_reader_before_it_raises() -> None:
    reads = _WatchedReads(_broker())

    async def refuse(batch: Sequence[Message]) -> Sequence[Message]:
        raise RuntimeError("no")

    with pytest.raises(RuntimeError, match="no"):
        await restore(reads, "log", 0, MemoryStore(int), "t[0]", refuse)
    assert reads.closed == [True]


async def test_a_restore_cancelled_in_its_batch_check_closes_its_reader_before_it_ends() -> None:
    reads = _WatchedReads(_broker())
    checking = asyncio.Event()

    async def hold(batch: Sequence[Message]) -> Sequence[Message]:
        checking.set()
        await asyncio.Event().wait()
        return batch

    task = asyncio.create_task(restore(reads, "log", 0, MemoryStore(int), "t[0]", hold))
    await checking.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert reads.closed == [True]
