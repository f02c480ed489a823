"""`group_by` and `through` forward elements in runs (one `send_many` per run): a key hook or an
encoding that fails dead-letters only its own element, the run's source events are done only
once the whole run is delivered, and a run never exceeds `_RUN_MAX` nor loses or repeats an
element."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import msgspec
import pytest
import streamc_runtime.forward as forward_module
from rtkit import Running, gated
from streamc_runtime import App, Stream, Worker
from streamc_runtime.memory import MemoryBroker, MemoryMessage, MemoryTransport, partition_for_key
from streamc_runtime.transport import TP, Delivery


def _committable(r: Running, topic: str, partition: int = 0) -> int | None:
    return r.worker.offsets.get(TP(topic, partition)).committable()


async def _settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


def _spy_runs(r: Running) -> list[tuple[str, int]]:
    """(topic, records) of every `send_many` the worker makes."""
    runs: list[tuple[str, int]] = []
    send_many = r.transport.send_many

    async def spy(topic: str, records: Sequence[Any], timestamps: Any = None) -> Any:
        runs.append((topic, len(records)))
        return await send_many(topic, records, timestamps)

    r.transport.send_many = spy  # type: ignore[method-assign]
    return runs


def _by_key(messages: Sequence[MemoryMessage]) -> dict[bytes | None, list[int]]:
    """Values per key, partition by partition in offset order (a key is on one partition)."""
    out: dict[bytes | None, list[int]] = {}
    for m in messages:
        out.setdefault(m.key, []).append(msgspec.json.decode(m.value or b"null"))
    return out


async def test_a_raising_key_in_the_middle_of_a_run_dead_letters_only_its_element() -> None:
    app = App("g")
    nums = app.topic("nums", key_type=str, value_type=int)
    rekeyed = app.topic("g-rekeyed", key_type=str, value_type=int, partitions=3, internal=True)
    got: list[int] = []

    def key(v: int) -> str:
        if v == 5:
            raise ValueError("no key for 5")
        return f"k{v % 3}"

    @app.agent(nums, name="a")
    async def regroup(stream: Stream[int]) -> None:
        async for v in stream.group_by(key, topic=rekeyed):
            got.append(v)

    r = Running(app)
    runs = _spy_runs(r)
    for i in range(10):
        r.produce("nums", i, key=f"src{i}")
    async with r:
        await r.idle()
        assert runs == [("g-rekeyed", 9)]  # one run, less the element whose key failed
    (dead,) = r.messages("g-dlq")
    assert dead.value == b"5"
    assert dead.key == b"src5"
    headers = dict(dead.headers)
    assert headers["streamc.error"] == b"no key for 5"
    assert headers["streamc.error.type"] == b"ValueError"
    assert headers["streamc.source.offset"] == b"5"
    assert _by_key(r.messages("g-rekeyed")) == {
        b"k0": [0, 3, 6, 9],
        b"k1": [1, 4, 7],
        b"k2": [2, 8],
    }
    for m in r.messages("g-rekeyed"):  # each key on the partition Kafka's partitioner picks
        assert m.key is not None
        assert m.partition == partition_for_key(m.key, 3)
    assert sorted(got) == [0, 1, 2, 3, 4, 6, 7, 8, 9]
    assert r.committed("nums") == {0: 10}


async def test_no_source_offset_of_a_run_is_committable_before_the_run_is_delivered() -> None:
    app = App("g")
    nums = app.topic("nums", key_type=str, value_type=int)
    rekeyed = app.topic("g-rekeyed", key_type=str, value_type=int, partitions=2, internal=True)
    got: list[int] = []

    @app.agent(nums, name="a")
    async def regroup(stream: Stream[int]) -> None:
        async for v in stream.group_by(lambda v: f"k{v % 2}", topic=rekeyed):
            got.append(v)

    r = gated(app, ["g-rekeyed"])
    runs = _spy_runs(r)
    for i in range(6):
        r.produce("nums", i)
    async with r:
        await r.idle()
        assert runs == [("g-rekeyed", 6)]
        assert sorted(got) == [0, 1, 2, 3, 4, 5]  # stored and read back, not yet acked
        assert len(r.transport.pending) == 6  # type: ignore[attr-defined]
        assert _committable(r, "nums") == 0
        assert await r.worker.commit()
        assert r.committed("nums") == {0: 0}
        r.transport.release()  # type: ignore[attr-defined]
        await _settle()
        assert _committable(r, "nums") == 6
        assert await r.worker.commit()
        assert r.committed("nums") == {0: 6}
    assert _by_key(r.messages("g-rekeyed")) == {b"k0": [0, 2, 4], b"k1": [1, 3, 5]}


async def test_a_run_delivered_in_part_keeps_every_source_offset_of_the_run() -> None:
    """One record of the run still unconfirmed holds the whole run, even the offsets of
    records already confirmed."""
    app = App("g")
    nums = app.topic("nums", key_type=str, value_type=int)
    out = app.topic("out", key_type=str, value_type=int)

    @app.agent(nums, name="a")
    async def copy(stream: Stream[int]) -> None:
        async for _ in stream.through(out):
            pass

    r = gated(app, ["out"])
    for i in range(4):
        r.produce("nums", i)
    async with r:
        await r.idle()
        pending = r.transport.pending  # type: ignore[attr-defined]
        assert len(pending) == 4
        for fut, delivery in pending[:3]:
            fut.set_result(delivery)
        await _settle()
        assert _committable(r, "nums") == 0
        r.transport.release()  # type: ignore[attr-defined]
        await _settle()
        assert _committable(r, "nums") == 4


async def test_a_value_the_target_topic_cannot_encode_dead_letters_only_its_element() -> None:
    app = App("t")
    nums = app.topic("nums", key_type=str, value_type=int)
    out = app.topic("out", key_type=str, value_type=int)
    got: list[int] = []

    def odd_one(v: int) -> Any:
        return complex(v, 1) if v == 2 else v * 10  # msgspec cannot encode a complex

    @app.agent(nums, name="a")
    async def copy(stream: Stream[int]) -> None:
        async for v in stream.process(odd_one).through(out):
            got.append(v)

    r = Running(app)
    runs = _spy_runs(r)
    for i in range(5):
        r.produce("nums", i, key=f"k{i}")
    async with r:
        await r.idle()
        assert runs == [("out", 4)]
    assert [(m.key, m.value) for m in r.messages("out")] == [
        (b"k0", b"0"),
        (b"k1", b"10"),
        (b"k3", b"30"),
        (b"k4", b"40"),
    ]
    assert got == [0, 10, 30, 40]
    (dead,) = r.messages("t-dlq")
    assert (dead.key, dead.value) == (b"k2", b"2")  # the source message, as it was read
    headers = dict(dead.headers)
    assert headers["streamc.error.type"] == b"TypeError"
    assert headers["streamc.source.offset"] == b"2"
    assert r.committed("nums") == {0: 5}


@pytest.mark.parametrize("run_max", [7, 1000])
async def test_runs_larger_than_the_maximum_forward_everything_once_in_order(
    monkeypatch: pytest.MonkeyPatch, run_max: int
) -> None:
    monkeypatch.setattr(forward_module, "_RUN_MAX", run_max)
    total = 50 if run_max == 7 else 2500
    app = App("g")
    nums = app.topic("nums", key_type=str, value_type=int, partitions=2)
    rekeyed = app.topic("g-rekeyed", key_type=str, value_type=int, partitions=3, internal=True)
    got: list[int] = []

    @app.agent(nums, name="a")
    async def regroup(stream: Stream[int]) -> None:
        async for v in stream.group_by(lambda v: f"k{v % 5}", topic=rekeyed):
            got.append(v)

    r = Running(app, buffer_size=5000, fetch_max=5000)  # all of it buffered at once
    runs = _spy_runs(r)
    for i in range(total):
        r.produce("nums", i, partition=i % 2)
    async with r:
        await r.idle()
    sizes = [n for _, n in runs]
    assert sum(sizes) == total
    assert max(sizes) == run_max  # runs were cut at the maximum, and never past it
    assert sizes[: total // run_max] == [run_max] * (total // run_max)
    values = [msgspec.json.decode(m.value or b"") for m in r.messages("g-rekeyed")]
    assert sorted(values) == list(range(total))  # each exactly once
    for k, vs in _by_key(r.messages("g-rekeyed")).items():
        assert k is not None
        rest = int(k[1:])
        for p in (0, 1):  # in order per source partition, within each key
            from_p = [v for v in vs if v % 2 == p]
            assert from_p == [v for v in range(total) if v % 5 == rest and v % 2 == p]
    assert sorted(got) == list(range(total))
    assert r.committed("nums") == {0: total // 2, 1: total // 2}


class _OneFails(MemoryTransport):
    """Stores every record at once but confirms deliveries only on `settle()`, failing the
    one whose value is `bad`."""

    def __init__(self, broker: MemoryBroker, group_id: str, bad: bytes) -> None:
        super().__init__(broker, group_id)
        self.bad = bad
        self.pending: list[tuple[asyncio.Future[Delivery], Delivery, bytes | None]] = []

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
        delivery = self.broker.produce(topic, value, key, headers, partition, timestamp)
        if topic == "out":
            self.pending.append((fut, delivery, value))
        else:
            fut.set_result(delivery)
        return fut

    def settle(self) -> None:
        for fut, delivery, value in self.pending:
            if value == self.bad:
                fut.set_exception(ConnectionError(f"{value!r} not stored"))
            else:
                fut.set_result(delivery)


async def test_one_failed_record_keeps_its_whole_run_uncommitted_and_stops_the_worker() -> None:
    app = App("f")
    nums = app.topic("nums", key_type=str, value_type=int)
    out = app.topic("out", key_type=str, value_type=int)

    @app.agent(nums, name="a")
    async def copy(stream: Stream[int]) -> None:
        async for _ in stream.through(out):
            pass

    r = Running(app)
    r.transport = _OneFails(r.broker, app.name, bad=b"2")
    r.worker = Worker(app, r.transport, stats_interval=0, commit_interval=60.0)
    runs = _spy_runs(r)
    for i in range(4):
        r.produce("nums", i)
    async with r:
        await r.idle()
        assert runs == [("out", 4)]
        r.transport.settle()
        assert await asyncio.wait_for(r.worker.wait(), 5) == 1
        assert _committable(r, "nums") == 0  # 0 and 1 were stored, but their run was not
    assert isinstance(r.worker.failure, ConnectionError)
    assert r.committed("nums") == {0: 0}


def _count_key_encodes(topic: Any) -> list[Any]:
    """Every key the forward asks `topic`'s key codec to encode."""
    asked: list[Any] = []
    encode = topic.key_codec.encode

    def counting(key: Any) -> bytes | None:
        asked.append(key)
        return encode(key)  # type: ignore[no-any-return]

    topic.key_codec.encode = counting
    return asked


@pytest.mark.parametrize("key_kind", ["sync", "async"])  # the fused loop, and the pull loop
async def test_a_repeating_str_key_is_encoded_once_and_lands_where_kafkas_partitioner_puts_it(
    key_kind: str,
) -> None:
    app = App("g")
    nums = app.topic("nums", key_type=str, value_type=int)
    rekeyed = app.topic("g-rekeyed", key_type=str, value_type=int, partitions=3, internal=True)
    got: list[int] = []

    def sync_key(v: int) -> str:
        return f"k{v % 3}"

    async def async_key(v: int) -> str:
        return f"k{v % 3}"

    @app.agent(nums, name="a")
    async def regroup(stream: Stream[int]) -> None:
        async for v in stream.group_by(
            sync_key if key_kind == "sync" else async_key, topic=rekeyed
        ):
            got.append(v)

    asked = _count_key_encodes(rekeyed)
    r = Running(app)
    for i in range(30):
        r.produce("nums", i, key=f"src{i}")
    async with r:
        await r.idle()
    assert sorted(asked) == ["k0", "k1", "k2"]  # once per distinct key, not per element
    assert _by_key(r.messages("g-rekeyed")) == {
        b"k0": list(range(0, 30, 3)),
        b"k1": list(range(1, 30, 3)),
        b"k2": list(range(2, 30, 3)),
    }
    for m in r.messages("g-rekeyed"):
        assert m.key is not None
        assert m.partition == partition_for_key(m.key, 3)
    assert sorted(got) == list(range(30))
    assert r.committed("nums") == {0: 30}


async def test_str_keys_past_the_remembered_ones_are_still_each_encoded_by_the_topics_codec(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(forward_module, "_KEY_CACHE_MAX", 2)  # forgets them as it goes
    app = App("g")
    nums = app.topic("nums", key_type=str, value_type=int)
    rekeyed = app.topic("g-rekeyed", key_type=str, value_type=int, partitions=3, internal=True)

    @app.agent(nums, name="a")
    async def regroup(stream: Stream[int]) -> None:
        async for _ in stream.group_by(lambda v: f"k{v // 2 % 5}", topic=rekeyed):
            pass

    asked = _count_key_encodes(rekeyed)
    r = Running(app)
    for i in range(20):
        r.produce("nums", i)
    async with r:
        await r.idle()
    # k0 k0 k1 k1 k2 k2 ...: each pair's second is remembered, but never past two keys
    assert asked == [f"k{i % 5}" for i in range(10)]
    assert {k: sorted(vs) for k, vs in _by_key(r.messages("g-rekeyed")).items()} == {
        f"k{k}".encode(): sorted([*range(2 * k, 20, 10), *range(2 * k + 1, 20, 10)])
        for k in range(5)
    }
    assert r.committed("nums") == {0: 20}


async def test_a_str_key_its_topic_cannot_encode_dead_letters_its_element_every_time() -> None:
    app = App("g")
    nums = app.topic("nums", key_type=str, value_type=int)
    rekeyed = app.topic("g-rekeyed", key_type=int, value_type=int, partitions=3, internal=True)

    @app.agent(nums, name="a")
    async def regroup(stream: Stream[int]) -> None:
        async for _ in stream.group_by(lambda v: "x" if v % 2 else str(v % 4), topic=rekeyed):
            pass

    r = Running(app)
    for i in range(8):
        r.produce("nums", i, key=f"src{i}")
    async with r:
        await r.idle()
    # an int topic's key codec writes "0" as b"0"; "x" is no integer, each time it comes
    assert _by_key(r.messages("g-rekeyed")) == {b"0": [0, 4], b"2": [2, 6]}
    assert [m.key for m in r.messages("g-dlq")] == [b"src1", b"src3", b"src5", b"src7"]
    assert r.committed("nums") == {0: 8}
