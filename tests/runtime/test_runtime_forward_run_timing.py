"""Forwarding in runs: when a run goes out.

`_Forward._run` sends a run once upstream has nothing more at hand. An async hook upstream (or
an async `group_by` key) is awaited inside the next pull, so a run must go out before such a
pull: otherwise the elements already finished would sit unsent, neither forwarded nor
committable, for as long as the next hook takes (a review found exactly that; these tests keep
it fixed). Records the transport refuses as too large are dead-lettered alone.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from rtkit import Running
from streamc_runtime import App, Stream, Worker
from streamc_runtime.transport import TP


async def _spin(seconds: float = 0.05) -> None:
    await asyncio.sleep(seconds)


def _values(r: Running, topic: str) -> list[int]:
    return [msgspec.json.decode(m.value or b"null") for m in r.messages(topic)]


async def test_an_element_is_forwarded_while_the_next_ones_async_hook_still_waits() -> None:
    app = App("g")
    nums = app.topic("nums", key_type=str, value_type=int)
    out = app.topic("out", key_type=str, value_type=int)
    gate = asyncio.Event()

    async def enrich(v: int) -> int:
        if v >= 1:
            await gate.wait()  # e.g. a slow call to another service
        return v

    @app.agent(nums, name="a")
    async def copy(stream: Stream[int]) -> None:
        async for _ in stream.process(enrich).through(out):
            pass

    r = Running(app)
    for i in range(3):
        r.produce("nums", i, key=f"k{i}")
    async with r:
        await _spin()
        try:
            # Element 0 is done with its hook: it should be on its way, and its source
            # offset committable once stored.
            assert _values(r, "out") == [0]
            assert r.worker.offsets.get(TP("nums", 0)).committable() == 1
        finally:
            gate.set()
            await r.idle()
    assert _values(r, "out") == [0, 1, 2]


async def test_an_element_is_forwarded_while_the_next_ones_async_key_still_waits() -> None:
    app = App("g")
    nums = app.topic("nums", key_type=str, value_type=int)
    rekeyed = app.topic("g-rekeyed", key_type=str, value_type=int, internal=True)
    gate = asyncio.Event()

    async def key(v: int) -> str:
        if v >= 1:
            await gate.wait()
        return f"k{v % 2}"

    @app.agent(nums, name="a")
    async def regroup(stream: Stream[int]) -> None:
        async for _ in stream.group_by(key, topic=rekeyed):
            pass

    r = Running(app)
    for i in range(3):
        r.produce("nums", i)
    async with r:
        await _spin()
        try:
            assert _values(r, "g-rekeyed") == [0]
            assert r.worker.offsets.get(TP("nums", 0)).committable() == 1
        finally:
            gate.set()
            await r.idle()
    assert sorted(_values(r, "g-rekeyed")) == [0, 1, 2]


async def test_with_sync_hooks_a_run_goes_out_once_upstream_is_empty() -> None:
    """Control: nothing waits inside the pull, so the run is sent and acked promptly."""
    app = App("g")
    nums = app.topic("nums", key_type=str, value_type=int)
    out = app.topic("out", key_type=str, value_type=int)

    @app.agent(nums, name="a")
    async def copy(stream: Stream[int]) -> None:
        async for _ in stream.process(lambda v: v).through(out):
            pass

    r = Running(app)
    for i in range(3):
        r.produce("nums", i, key=f"k{i}")
    async with r:
        await r.idle()
        assert _values(r, "out") == [0, 1, 2]
        assert r.worker.offsets.get(TP("nums", 0)).committable() == 3


async def test_a_record_the_transport_refuses_as_too_large_is_dead_lettered_alone() -> None:
    """`send_many` refuses records it can never send (Kafka: over `max_request_size`) before
    sending any of the run; only those elements go to the dead-letter topic, the rest of the
    run is forwarded in order and everything is committed."""
    from streamc_runtime.memory import MemoryTransport
    from streamc_runtime.transport import RecordTooLargeError

    class Limited(MemoryTransport):
        async def send_many(self, topic: str, records: Any, timestamps: Any = None) -> Any:
            big = [i for i, (_k, v, _h) in enumerate(records) if v is not None and len(v) > 3]
            if topic == "out" and big:
                raise RecordTooLargeError("too large", big)
            return await super().send_many(topic, records, timestamps)

    app = App("big")
    nums = app.topic("nums", key_type=str, value_type=int)
    out = app.topic("out", key_type=str, value_type=int)

    @app.agent(nums, name="a")
    async def copy(stream: Stream[int]) -> None:
        async for _ in stream.through(out):
            pass

    r = Running(app)
    r.transport = Limited(r.broker, app.name)
    r.worker = Worker(app, r.transport, stats_interval=0, commit_interval=60)
    for v in (1, 22, 33333, 4, 55555, 6):
        r.produce("nums", v, key="k")
    async with r:
        await r.idle()
    assert _values(r, "out") == [1, 22, 4, 6]
    dead = r.messages("big-dlq")
    assert [m.value for m in dead] == [b"33333", b"55555"]
    assert all(dict(m.headers)["streamc.error.type"].endswith(b"RecordTooLargeError") for m in dead)
    assert r.committed("nums") == {0: 6}
