"""Windowed aggregates and `distinct` across revocations, as tables: never waiting for ever on
a store that left with its partition, never writing a revoked store's changelog after it is
closed (the new owner writes there meanwhile), and a memory store assigned back closes and
expires what others wrote into it meanwhile."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import msgspec
from rtkit import wait_for
from streamc_runtime import App, Stream, Time, Tumbling, Window, Worker
from streamc_runtime.local import until_idle
from streamc_runtime.memory import MemoryBroker, MemoryMessage, MemoryTransport, partition_for_key
from streamc_runtime.records import value_codec
from streamc_runtime.state import Table, table_rows
from test_runtime_distinct import dedup_app
from windowkit import Click, ClicksState, UserWindow, by_user, row, rows, windows_app

REPARTITION = "clicks-per_user-clicks-user-repartition"
DISTINCT_CHANGELOG = "dedup-dedup-distinct-1-changelog"


def keys_on(partition: int, n: int = 1, partitions: int = 2) -> list[str]:
    keys = (f"user{i}" for i in range(1000))
    return [k for k in keys if partition_for_key(k.encode(), partitions) == partition][:n]


def broker_for(app: App) -> MemoryBroker:
    broker = MemoryBroker()
    for topic in app.topics.values():
        broker.create_topic(topic.name, topic.partitions, topic.config)
    return broker


def produce(
    broker: MemoryBroker, topic: str, key: str, at: int, partition: int, marker: int | None = None
) -> None:
    value = Click(user=key, at=None if marker is None else Time.from_ms(marker))
    broker.produce(topic, _encode(value), key.encode(), (), partition, at)


_encode = value_codec(Click).encode
_decode = value_codec(UserWindow).decode


def published(broker: MemoryBroker) -> list[tuple[str, int, int, int]]:
    return rows([_decode(m.value) for m in broker.messages("user_windows")])


def unit(key: str, start: int, clicks: int) -> dict[tuple[str, Window], UserWindow]:
    window = Window(start, start + 1000)
    return {(key, window): row(key, window, ClicksState(clicks=clicks))}


class SlowRestoreTransport(MemoryTransport):
    """Restores of the changelog partitions in `slow` wait until `gate` is set."""

    def __init__(self, broker: MemoryBroker, group_id: str, slow: set[int]) -> None:
        super().__init__(broker, group_id)
        self.slow = slow
        self.gate = asyncio.Event()

    async def read_partition(
        self, topic: str, partition: int, start: int
    ) -> AsyncIterator[Sequence[MemoryMessage]]:
        if partition in self.slow:
            await self.gate.wait()
        async for batch in super().read_partition(topic, partition, start):
            yield batch


async def test_a_window_element_waiting_for_a_store_revoked_mid_restore_does_not_stall() -> None:
    app = windows_app(Tumbling(size=1000))
    broker = broker_for(app)
    a_transport = SlowRestoreTransport(broker, "clicks", slow={1})
    a = Worker(app, a_transport, stats_interval=0, commit_interval=60.0, revoke_timeout=0.05)
    await a.start()
    b = Worker(app, MemoryTransport(broker, "clicks"), stats_interval=0, commit_interval=60.0)
    [kept], [moved] = keys_on(0), keys_on(1)
    try:
        produce(broker, "clicks", moved, 50, 0)
        # it reaches the aggregation and waits for store 1's restore
        await wait_for(lambda: len(broker.messages(REPARTITION, 1)) == 1)
        await asyncio.sleep(0.05)
        await b.start()  # takes partition 1: a cancels that restore
        await wait_for(lambda: {tp.partition for tp in a_transport.assignment()} == {0})
        for at in (100, 200, 300):
            produce(broker, "clicks", kept, at, 0)
        await wait_for(lambda: a.table("per_user") == unit(kept, 0, 3), within=2.0)
        await wait_for(lambda: b.table("per_user") == unit(moved, 0, 1), within=2.0)
    finally:
        await b.stop()
        await a.stop()


def blocking_windows_app(gate: asyncio.Event, blocked: asyncio.Event) -> App:
    """`windows_app(Tumbling(1000))` whose async fold waits for `gate` the first time it
    folds a click marked 999 (a slow reduce hook)."""
    app = App("clicks")
    clicks = app.topic("clicks", key_type=str, value_type=Click, partitions=2)
    repartition = app.topic(
        REPARTITION, key_type=str, value_type=Click, partitions=2, internal=True, positions=True
    )
    out = app.topic("user_windows", key_type=str, value_type=UserWindow, partitions=2)
    table: Table[str, ClicksState] = app.table(
        "per_user",
        key_type=str,
        value_type=UserWindow,
        state_type=ClicksState,
        partitions=2,
        window=Tumbling(size=1000),
    )

    async def fold(state: ClicksState, click: Click) -> ClicksState:
        if click.at is not None and click.at.ms == 999 and not blocked.is_set():
            blocked.set()
            await gate.wait()
        state.clicks += 1
        return state

    @app.agent(clicks, name="per_user")
    async def per_user(stream: Stream[Click]) -> None:
        async for _ in (
            stream.group_by(by_user, topic=repartition, returns=str)
            .aggregate(table, fold=fold, row=row)
            .to(out)
        ):
            pass

    return app


async def test_a_window_run_folded_before_its_store_was_revoked_writes_no_changelog_after() -> None:
    gate, blocked = asyncio.Event(), asyncio.Event()
    app = blocking_windows_app(gate, blocked)
    broker = broker_for(app)
    a_transport = MemoryTransport(broker, "clicks")
    a = Worker(app, a_transport, stats_interval=0, commit_interval=60.0, revoke_timeout=0.05)
    await a.start()
    b = Worker(app, MemoryTransport(broker, "clicks"), stats_interval=0, commit_interval=60.0)
    [k] = keys_on(1)
    want = unit(k, 0, 3)
    try:
        await until_idle(a)
        # one run on table partition 1: the first is folded, then the second's fold waits
        produce(broker, REPARTITION, k, 100, 1)
        produce(broker, REPARTITION, k, 200, 1, marker=999)
        await asyncio.wait_for(blocked.wait(), 2)
        await b.start()  # takes partition 1 once a gives up waiting for the run
        await wait_for(lambda: {tp.partition for tp in a_transport.assignment()} == {0})
        produce(broker, REPARTITION, k, 300, 1)
        await wait_for(lambda: b.table("per_user") == want)
        gate.set()  # the old run of a goes on: its partition is gone
        await until_idle(a)
        await until_idle(b)
    finally:
        gate.set()
        await b.stop()
        await a.stop()
    assert table_rows(broker, app.tables["per_user"]) == want
    assert published(broker)[-1] == (k, 0, 1000, 3)


async def test_a_memory_store_assigned_back_closes_the_windows_others_opened_in_it() -> None:
    app = windows_app(Tumbling(size=1000), emit="final")
    broker = broker_for(app)
    a_transport = MemoryTransport(broker, "clicks")
    a = Worker(app, a_transport, stats_interval=0, commit_interval=60.0)
    b = Worker(app, MemoryTransport(broker, "clicks"), stats_interval=0, commit_interval=60.0)
    k, k2 = keys_on(1, 2)
    await a.start()
    try:
        produce(broker, REPARTITION, k, 100, 1)  # a opens [0, 1000) of k
        await until_idle(a)
        await b.start()
        await wait_for(lambda: {tp.partition for tp in a_transport.assignment()} == {0})
        produce(broker, REPARTITION, k2, 2100, 1)  # b closes k's window, opens k2's
        await wait_for(lambda: len(broker.messages("user_windows", 1)) == 1)
        await until_idle(b)
        await b.stop()  # partition 1 (its kept memory store) goes back to a
        await wait_for(lambda: {tp.partition for tp in a_transport.assignment()} == {0, 1})
        produce(broker, REPARTITION, k, 5000, 1)  # closes k2's [2000, 3000), opened by b
        await wait_for(lambda: len(broker.messages("user_windows", 1)) == 2, within=2.0)
        await until_idle(a)
        assert a.table("per_user") == unit(k, 5000, 1)
    finally:
        await b.stop()
        await a.stop()
    assert published(broker) == [(k, 0, 1000, 1), (k2, 2000, 3000, 1)]


def send(broker: MemoryBroker, key: str, at: int, partition: int) -> None:
    broker.produce("clicks", msgspec.json.encode(Click(user="u")), key.encode(), (), partition, at)


def passed(broker: MemoryBroker, *keys: str) -> list[tuple[str, int]]:
    """What went out for `keys` (each key's outputs in order)."""
    out = []
    for p in range(2):
        out += [((m.key or b"").decode(), m.timestamp) for m in broker.messages("unique", p)]
    return sorted((k, t) for k, t in out if k in keys)


def distinct_changelog(broker: MemoryBroker, partition: int) -> list[Any]:
    return [
        ((m.key or b"").decode(), m.value)
        for m in broker.messages(DISTINCT_CHANGELOG, partition)
        if m.key and m.key[:1] != b"\x00"
    ]


async def test_distinct_waiting_for_a_store_revoked_mid_restore_does_not_stall() -> None:
    app = dedup_app()
    broker = broker_for(app)
    a_transport = SlowRestoreTransport(broker, "dedup", slow={1})
    a = Worker(app, a_transport, stats_interval=0, commit_interval=60.0, revoke_timeout=0.05)
    await a.start()
    b = Worker(app, MemoryTransport(broker, "dedup"), stats_interval=0, commit_interval=60.0)
    try:
        send(broker, "m", 50, 1)  # waits for store 1's restore
        await asyncio.sleep(0.1)
        await b.start()  # takes partition 1: a cancels that restore
        await wait_for(lambda: {tp.partition for tp in a_transport.assignment()} == {0})
        for key, at in (("x", 100), ("x", 200), ("y", 300)):
            send(broker, key, at, 0)
        await wait_for(lambda: passed(broker, "x", "y") == [("x", 100), ("y", 300)], within=2.0)
        await wait_for(lambda: passed(broker, "m") == [("m", 50)], within=2.0)
    finally:
        await b.stop()
        await a.stop()


async def test_distinct_entries_restored_into_a_store_assigned_back_expire() -> None:
    app = dedup_app()
    broker = broker_for(app)
    a_transport = MemoryTransport(broker, "dedup")
    a = Worker(app, a_transport, stats_interval=0, commit_interval=60.0)
    b = Worker(app, MemoryTransport(broker, "dedup"), stats_interval=0, commit_interval=60.0)
    await a.start()
    try:
        send(broker, "a", 0, 1)
        await wait_for(lambda: passed(broker, "a") == [("a", 0)])
        await until_idle(a)
        await b.start()
        await wait_for(lambda: {tp.partition for tp in a_transport.assignment()} == {0})
        send(broker, "c", 500, 1)  # stored by b
        await wait_for(lambda: passed(broker, "a", "c") == [("a", 0), ("c", 500)])
        await until_idle(b)
        await b.stop()  # partition 1 (its kept memory store) goes back to a
        await wait_for(lambda: {tp.partition for tp in a_transport.assignment()} == {0, 1})
        send(broker, "d", 5000, 1)  # stream time 5000: a and c expire
        await wait_for(lambda: len(distinct_changelog(broker, 1)) >= 4)
        await until_idle(a)
    finally:
        await b.stop()
        await a.stop()
    assert distinct_changelog(broker, 1) == [
        ("a", b'[0,"clicks:1:0",[]]'),
        ("c", b'[500,"clicks:1:1",[]]'),
        ("d", b'[5000,"clicks:1:2",[]]'),
        ("a", None),
        ("c", None),
    ]
