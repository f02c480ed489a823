"""The aiokafka transport against a real broker (Tansu): the `Transport` promises, one by one."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Collection, Sequence
from typing import cast

import pytest
from kafkatest import Broker, RecordingListener, kafka_partition, open_transport, wait_until
from streamc_runtime.kafka import KafkaTransport, KafkaTransportError, KafkaUnavailableError
from streamc_runtime.kafka_records import KafkaRecord
from streamc_runtime.transport import TP, Message, TopicSpec, Transport

pytestmark = [pytest.mark.kafka, pytest.mark.asyncio]


async def drain(
    transport: Transport, count: int, within: float = 20.0, max_records: int = 500
) -> list[Message]:
    """Fetch until `count` messages arrived (or fail after `within` seconds)."""
    got: list[Message] = []
    deadline = time.monotonic() + within
    while len(got) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"got {len(got)} of {count} messages within {within}s")
        got.extend(await transport.fetch(0.2, max_records))
    return got


async def subscribed(
    transport: Transport, topics: Sequence[str], want: Callable[[RecordingListener], bool]
) -> RecordingListener:
    listener = RecordingListener()
    await transport.subscribe(topics, listener)
    await wait_until(lambda: want(listener), 20, f"assignment of {topics}")
    return listener


async def test_round_trip_keeps_keys_values_and_headers(
    kafka_broker: Broker, names: Callable[[str], str]
) -> None:
    topic = names("t")
    async with open_transport(kafka_broker, names("g")) as t:
        await t.ensure_topics([TopicSpec(topic, 3)])
        sent = [
            (b"k1", b"v1", [("trace", b"abc"), ("n", b"1")]),
            (None, b"no-key", []),
            (b"k3", None, [("tombstone", b"")]),
            (b"k1", b"\x00\xffbinary", [("dup", b"1"), ("dup", b"2")]),
        ]
        deliveries = []
        for key, value, headers in sent:
            deliveries.append(await t.send(topic, value, key=key, headers=headers))
        await t.flush()
        landed = [await d for d in deliveries]
        assert all(d.topic == topic and d.offset >= 0 for d in landed)

        await subscribed(t, [topic], lambda lis: len(lis.assigned) == 3)
        got = await drain(t, len(sent))
    by_value = {m.value: m for m in got}
    assert len(got) == len(sent)
    # The consumer's own lean records (kafka_records.py), not aiokafka's ConsumerRecords.
    assert {type(m) for m in got} == {KafkaRecord}
    for (key, value, headers), delivery in zip(sent, landed, strict=True):
        m = by_value[value]
        assert m.key == key
        assert [(k, bytes(v)) for k, v in m.headers] == headers
        assert (m.topic, m.partition, m.offset) == (
            delivery.topic,
            delivery.partition,
            delivery.offset,
        )
        assert m.timestamp > 1_600_000_000_000  # milliseconds, not seconds
        assert cast(KafkaRecord, m).timestamp_type == 0  # set by the producer
        assert m.headers == tuple(headers)
    # Records with one key stay in order in one partition.
    k1 = [m for m in got if m.key == b"k1"]
    assert [m.value for m in sorted(k1, key=lambda m: m.offset)] == [b"v1", b"\x00\xffbinary"]
    assert len({m.partition for m in k1}) == 1


async def test_keyed_records_land_where_kafkas_default_partitioner_puts_them(
    kafka_broker: Broker, names: Callable[[str], str]
) -> None:
    topic = names("t")
    async with open_transport(kafka_broker, names("g")) as t:
        await t.ensure_topics([TopicSpec(topic, 6)])
        keys = [f"account-{i}".encode() for i in range(60)]
        pending = [await t.send(topic, b"x", key=key) for key in keys]
        # A plain Future: the runtime attaches callbacks instead of spawning a task per send.
        assert all(isinstance(d, asyncio.Future) for d in pending)
        landed = [await d for d in pending]
    assert {d.partition for d in landed} == set(range(6))  # the keys do spread
    for key, d in zip(keys, landed, strict=True):
        assert d.partition == kafka_partition(key, 6), key


async def test_explicit_partition_is_respected(
    kafka_broker: Broker, names: Callable[[str], str]
) -> None:
    topic = names("t")
    async with open_transport(kafka_broker, names("g")) as t:
        await t.ensure_topics([TopicSpec(topic, 4)])
        landed = [await (await t.send(topic, b"x", key=b"same", partition=p)) for p in range(4)]
    assert [d.partition for d in landed] == [0, 1, 2, 3]


async def test_commit_then_committed_and_a_restart_resumes_there(
    kafka_broker: Broker, names: Callable[[str], str]
) -> None:
    topic, group = names("t"), names("g")
    tp = TP(topic, 0)
    async with open_transport(kafka_broker, group) as t:
        await t.ensure_topics([TopicSpec(topic, 1)])
        for i in range(10):
            await t.send(topic, str(i).encode())
        await t.flush()
        await subscribed(t, [topic], lambda lis: tp in lis.assigned)
        assert await t.committed(tp) is None
        got = await drain(t, 10)
        assert [m.offset for m in got] == list(range(10))
        await t.commit({tp: 6})
        assert await t.committed(tp) == 6
        await t.commit({})  # nothing to commit is fine
        assert await t.committed(tp) == 6

    # A new member of the group starts at the committed offset, not the beginning.
    async with open_transport(kafka_broker, group) as t2:
        assert await t2.committed(tp) == 6
        await subscribed(t2, [topic], lambda lis: tp in lis.assigned)
        again = await drain(t2, 4)
        assert [m.value for m in again] == [b"6", b"7", b"8", b"9"]


async def test_pause_holds_back_a_partition_until_resumed(
    kafka_broker: Broker, names: Callable[[str], str]
) -> None:
    topic = names("t")
    p0, p1 = TP(topic, 0), TP(topic, 1)
    async with open_transport(kafka_broker, names("g")) as t:
        await t.ensure_topics([TopicSpec(topic, 2)])
        await subscribed(t, [topic], lambda lis: lis.assigned == {p0, p1})
        assert t.assignment() == {p0, p1}
        t.pause([p0])
        for i in range(5):
            await t.send(topic, f"a{i}".encode(), partition=0)
            await t.send(topic, f"b{i}".encode(), partition=1)
        await t.flush()

        got = await drain(t, 5)
        # Wait a few more fetches: nothing from the paused partition may slip through.
        for _ in range(5):
            got.extend(await t.fetch(0.1, 100))
        assert {m.partition for m in got} == {1}
        assert len(got) == 5

        t.resume([p0])
        rest = await drain(t, 5)
        assert [m.value for m in rest] == [f"a{i}".encode() for i in range(5)]
        # Pausing what is not assigned is a no-op, not an error (it may just have been revoked).
        t.pause([TP(topic, 7), TP("elsewhere", 0)])
        t.resume([TP(topic, 7)])


async def test_pausing_with_records_already_buffered_skips_nothing(
    kafka_broker: Broker, names: Callable[[str], str]
) -> None:
    """Back-pressure pauses a partition whose next records the client may already hold; after
    resuming, reading must go on at the next offset: no gap, no repeat."""
    topic = names("t")
    tp = TP(topic, 0)
    async with open_transport(kafka_broker, names("g")) as t:
        await t.ensure_topics([TopicSpec(topic, 1)])
        for i in range(200):
            await t.send(topic, str(i).encode())
        await t.flush()
        await subscribed(t, [topic], lambda lis: tp in lis.assigned)
        got = await drain(t, 1, max_records=7)  # the client has fetched far more than 7
        t.pause([tp])
        for _ in range(3):
            assert not await t.fetch(0.1, 100)
        t.resume([tp])
        got += await drain(t, 200 - len(got))
    assert [m.offset for m in got] == list(range(200))


async def test_ensure_topics_is_idempotent_and_tolerates_racing_creators(
    kafka_broker: Broker, names: Callable[[str], str]
) -> None:
    a, b = names("a"), names("b")
    specs = [
        TopicSpec(a, 3),
        TopicSpec(b, 5, {"cleanup.policy": "delete", "retention.ms": "3600000"}),
    ]
    async with (
        open_transport(kafka_broker, names("g1")) as t1,
        open_transport(kafka_broker, names("g2")) as t2,
    ):
        assert t1.partitions_for(a) is None
        # Two workers starting at once both try to create the same topics.
        await asyncio.gather(t1.ensure_topics(specs), t2.ensure_topics(specs))
        await t1.ensure_topics(specs)
        assert (t1.partitions_for(a), t1.partitions_for(b)) == (3, 5)
        assert (t2.partitions_for(a), t2.partitions_for(b)) == (3, 5)
        # An existing topic keeps its partitions even if a later declaration differs.
        await t1.ensure_topics([TopicSpec(a, 8)])
        assert t1.partitions_for(a) == 3
        await t1.ensure_topics([])


class Member:
    """A stand-in for the runtime: counts what it reads, commits what it read on revoke."""

    def __init__(self, transport: KafkaTransport, seen: dict[bytes, int]) -> None:
        self.transport = transport
        self.seen = seen
        self.done: dict[TP, int] = {}
        self.listener = RecordingListener(on_revoke=self.commit_revoked)

    async def commit_revoked(self, revoked: frozenset[TP]) -> None:
        await self.transport.commit({tp: o for tp, o in self.done.items() if tp in revoked})
        for tp in revoked:
            self.done.pop(tp, None)

    async def poll(self) -> None:
        for m in await self.transport.fetch(0.1, 100):
            value = bytes(m.value or b"")
            self.seen[value] = self.seen.get(value, 0) + 1
            self.done[TP(m.topic, m.partition)] = m.offset + 1


async def test_two_members_split_partitions_and_hand_over_when_one_stops(
    kafka_broker: Broker, names: Callable[[str], str]
) -> None:
    topic, group = names("t"), names("g")
    everything = {TP(topic, p) for p in range(4)}
    seen: dict[bytes, int] = {}

    async def poll_until(members: Sequence[Member], count: int) -> None:
        deadline = time.monotonic() + 20
        while len(seen) < count and time.monotonic() < deadline:
            for member in members:
                await member.poll()
        assert len(seen) == count

    async with open_transport(kafka_broker, group) as t1:
        await t1.ensure_topics([TopicSpec(topic, 4)])
        m1 = Member(t1, seen)
        await t1.subscribe([topic], m1.listener)
        await wait_until(lambda: m1.listener.assigned == everything, 20, "the first member")
        async with open_transport(kafka_broker, group) as t2:
            m2 = Member(t2, seen)
            await t2.subscribe([topic], m2.listener)
            l1, l2 = m1.listener, m2.listener
            await wait_until(
                lambda: (
                    bool(l1.assigned and l2.assigned) and l1.assigned | l2.assigned == everything
                ),
                30,
                "the group to split the partitions",
            )
            assert not l1.assigned & l2.assigned
            assert t1.assignment() == l1.assigned and t2.assignment() == l2.assigned

            # Keys chosen so that every partition, hence both members, gets records.
            assert {kafka_partition(f"k{i}".encode(), 4) for i in range(40)} == {0, 1, 2, 3}
            for i in range(40):
                await t1.send(topic, f"m{i}".encode(), key=f"k{i}".encode())
            await t1.flush()
            await poll_until([m1, m2], 40)
            assert m1.done and m2.done
            # A graceful stop: the runtime commits what it finished, then stops the transport.
            await t2.commit(m2.done)

        # t2 left the group: t1 takes every partition over, from t2's committed offsets.
        await wait_until(lambda: l1.assigned == everything, 30, "the hand-over to the survivor")
        assert t1.assignment() == everything
        for i in range(40, 60):
            await t1.send(topic, f"m{i}".encode(), key=f"k{i}".encode())
        await t1.flush()
        await poll_until([m1], 60)
    assert set(seen) == {f"m{i}".encode() for i in range(60)}
    # Everything finished was committed (on revoke, or before leaving): nothing read twice.
    assert all(count == 1 for count in seen.values()), seen


async def test_unreachable_broker_fails_clearly_after_bounded_retries(
    names: Callable[[str], str],
) -> None:
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    transport = KafkaTransport.from_url(
        f"kafka://127.0.0.1:{port}",
        group_id=names("g"),
        enable_idempotence=False,
        connect_attempts=3,
        connect_backoff_s=0.1,
    )
    began = time.monotonic()
    with pytest.raises(KafkaUnavailableError) as caught:
        await transport.start()
    message = str(caught.value)
    assert f"127.0.0.1:{port}" in message
    assert "after 3 attempt(s)" in message
    assert "STREAMC_BROKER" in message
    assert time.monotonic() - began < 10
    await transport.stop()  # safe after a failed start
    await transport.stop()


async def test_a_failing_rebalance_listener_surfaces_from_fetch(
    kafka_broker: Broker, names: Callable[[str], str]
) -> None:
    """aiokafka only logs what a listener raises; the transport must not let it vanish."""

    class Broken(RecordingListener):
        async def on_partitions_assigned(self, assigned: Collection[TP]) -> None:
            raise RuntimeError("runtime bug")

    topic = names("t")
    async with open_transport(kafka_broker, names("g")) as t:
        await t.ensure_topics([TopicSpec(topic, 1)])
        await t.subscribe([topic], Broken())
        with pytest.raises(KafkaTransportError, match="rebalance listener") as caught:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                await t.fetch(0.1, 10)
        assert isinstance(caught.value.__cause__, RuntimeError)


async def test_a_start_cancelled_while_it_closes_a_failed_attempt_ends_cancelled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """aiokafka's client stops await their own cancelled tasks inside
    `suppress(CancelledError)`: a SIGTERM's cancel of the start landing while it closed the
    clients of a failed attempt was lost, and the start went on connecting (for minutes, while
    `streamc worker` waited for it to end)."""
    closing = asyncio.Event()
    opened = 0

    class SwallowingClient:
        async def stop(self) -> None:
            closing.set()
            with contextlib.suppress(asyncio.CancelledError):  # as aiokafka's `close` does
                await asyncio.sleep(0.2)

    async def failing_open(self: KafkaTransport) -> None:
        nonlocal opened
        opened += 1
        self._consumer = SwallowingClient()
        raise ConnectionError("unreachable")

    monkeypatch.setattr(KafkaTransport, "_open", failing_open)
    transport = KafkaTransport.from_url(
        "kafka://127.0.0.1:9", group_id="g", connect_attempts=50, connect_backoff_s=0.01
    )
    starting = asyncio.ensure_future(transport.start())
    await asyncio.wait_for(closing.wait(), 5)
    starting.cancel()
    await asyncio.wait({starting}, timeout=5)
    assert starting.cancelled(), f"the start went on: {starting}"
    assert opened == 1


async def test_a_start_cancelled_while_a_client_closes_still_closes_the_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A cancel aiokafka does not swallow (it lands outside its `suppress`) came out of the
    consumer's close and skipped the admin's and the producer's: after a SIGTERM during
    start-up their connections stayed open, as the stop had already closed what it found."""
    closing = asyncio.Event()
    closed: list[str] = []

    class Client:
        def __init__(self, name: str) -> None:
            self.name = name

        async def stop(self) -> None:
            closing.set()
            await asyncio.sleep(0.2)  # the cancel comes out of here
            closed.append(self.name)

        async def close(self) -> None:
            closed.append(self.name)

    async def failing_open(self: KafkaTransport) -> None:
        self._consumer = Client("consumer")
        self._admin = Client("admin")
        self._producer = Client("producer")
        raise ConnectionError("unreachable")

    monkeypatch.setattr(KafkaTransport, "_open", failing_open)
    transport = KafkaTransport.from_url(
        "kafka://127.0.0.1:9", group_id="g", connect_attempts=50, connect_backoff_s=0.01
    )
    starting = asyncio.ensure_future(transport.start())
    await asyncio.wait_for(closing.wait(), 5)
    starting.cancel()
    await asyncio.wait({starting}, timeout=5)
    assert starting.cancelled(), f"the start went on: {starting}"
    assert closed == ["admin", "producer"]
    assert (transport._consumer, transport._admin, transport._producer) == (None, None, None)
