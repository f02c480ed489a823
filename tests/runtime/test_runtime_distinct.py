"""`Stream.distinct(within=, field=)`: drops what was let through within a span of event
time, per partition; its own changelog, expiry, and restore across workers."""

from __future__ import annotations

from operator import attrgetter
from typing import Any

import msgspec
from rtkit import Running
from streamc_runtime import App, Stream
from windowkit import Click

CHANGELOG = "dedup-dedup-distinct-1-changelog"


def dedup_app(field: bool = False) -> App:
    app = App("dedup")
    clicks = app.topic("clicks", key_type=str, value_type=Click, partitions=2)
    out = app.topic("unique", key_type=str, value_type=Click, partitions=2)

    @app.agent(clicks, name="dedup")
    async def dedup(stream: Stream[Click]) -> None:
        step = stream.distinct(within=1000, field=attrgetter("user") if field else None)
        async for _ in step.to(out):
            pass

    return app


def send(r: Running, key: str, at: int, user: str = "u", partition: int = 0) -> None:
    value = msgspec.json.encode(Click(user=user))
    r.broker.produce("clicks", value, key.encode(), (), partition, at)


def passed(r: Running) -> list[tuple[str, int]]:
    return [((m.key or b"").decode(), m.timestamp) for m in r.messages("unique")]


async def test_a_key_seen_within_the_span_is_dropped_and_passes_again_after_it() -> None:
    r = Running(dedup_app())
    async with r:
        for key, at in [("a", 0), ("a", 999), ("b", 500), ("a", 1000), ("a", 1500), ("a", 1999)]:
            send(r, key, at)
        send(r, "a", 10, partition=1)  # another partition: its own state
        await r.idle()
    assert passed(r) == [("a", 0), ("b", 500), ("a", 1000), ("a", 10)]
    assert r.committed("clicks") == r.end_offsets("clicks")


async def test_distinct_on_a_field_compares_the_field_not_the_key() -> None:
    r = Running(dedup_app(field=True))
    async with r:
        send(r, "k1", 0, user="x")
        send(r, "k2", 100, user="x")
        send(r, "k3", 200, user="y")
        await r.idle()
    assert sorted(passed(r)) == [("k1", 0), ("k3", 200)]


async def test_expired_entries_are_tombstoned_once_committed_and_restored_elsewhere() -> None:
    app = dedup_app()
    a = Running(app)
    async with a:
        send(a, "a", 0)
        send(a, "b", 600)
        send(a, "c", 1700)  # stream time 1700: a (0 + 1000) and b (600 + 1000) expire
        await a.idle()
        # a and b were not committed when they expired: a replay of the run must still find
        # them let through, so their tombstones wait for the first run after the commit
        send(a, "d", 1700)
        await a.idle()
        assert await a.worker.commit()
        send(a, "e", 1700)
        await a.idle()
    changelog: list[Any] = [
        (m.key, m.value) for m in a.messages(CHANGELOG) if not m.key or m.key[:1] != b"\x00"
    ]
    assert changelog == [
        (b"a", b'[0,"clicks:0:0",[]]'),
        (b"b", b'[600,"clicks:0:1",[]]'),
        (b"c", b'[1700,"clicks:0:2",[]]'),
        (b"d", b'[1700,"clicks:0:3",[]]'),
        (b"a", None),
        (b"b", None),
        (b"e", b'[1700,"clicks:0:4",[]]'),
    ]
    b = Running(app, broker=a.broker)
    async with b:
        send(b, "c", 2000)  # restored: c was let through at 1700
        send(b, "a", 2000)  # expired: passes
        await b.idle()
    assert sorted(passed(b)) == [
        ("a", 0),
        ("a", 2000),
        ("b", 600),
        ("c", 1700),
        ("d", 1700),
        ("e", 1700),
    ]


async def test_an_entry_past_its_expiry_no_longer_counts_before_its_tombstone() -> None:
    r = Running(dedup_app())
    async with r:
        send(r, "a", 1000)
        send(r, "a", 0)  # 1000 before: passes, and is stored with stream time at 1000 already
        send(r, "a", 500)  # 0 + 1000 <= stream time: expired, though not yet tombstoned
        await r.idle()
    # (a crash replaying 1000 before 0 tombstones 0 at once: the same decision either way)
    assert passed(r) == [("a", 1000), ("a", 0), ("a", 500)]


async def test_an_entry_keeps_the_positions_let_through_until_they_are_committed() -> None:
    r = Running(dedup_app())
    async with r:
        send(r, "a", 0)
        await r.idle()
        assert await r.worker.commit()
        send(r, "a", 1000)  # a@0 is committed: no replay can bring it back
        await r.idle()
        send(r, "a", 2000)  # a@1000 is not: a replay must still find it let through
        await r.idle()
        assert await r.worker.commit()
        send(r, "a", 3000)
        await r.idle()
    assert [m.value for m in r.messages(CHANGELOG) if m.key == b"a"] == [
        b'[0,"clicks:0:0",[]]',
        b'[1000,"clicks:0:1",[]]',
        b'[2000,"clicks:0:2",["clicks:0:1"]]',
        b'[3000,"clicks:0:3",[]]',
    ]


async def test_after_a_repartition_the_entry_keeps_source_positions_until_committed() -> None:
    app = App("dedup")
    clicks = app.topic("clicks", key_type=str, value_type=Click, partitions=2)
    by_user = app.topic(
        "by-user", key_type=str, value_type=Click, partitions=2, internal=True, positions=True
    )
    out = app.topic("unique", key_type=str, value_type=Click, partitions=2)

    @app.agent(clicks, name="dedup")
    async def dedup(stream: Stream[Click]) -> None:
        regrouped = stream.group_by(attrgetter("user"), topic=by_user, returns=str)
        async for _ in regrouped.distinct(within=1000, field=None).to(out):
            pass

    r = Running(app)
    async with r:
        send(r, "k", 0, user="a")
        await r.idle()
        assert await r.worker.commit()
        send(r, "k", 1000, user="a")  # the repartitioned a@0 is committed
        await r.idle()
        send(r, "k", 2000, user="a")  # a@1000 is not
        await r.idle()
    assert [m.value for m in r.messages(CHANGELOG) if m.key == b"a"] == [
        b'[0,"clicks:0:0",[]]',
        b'[1000,"clicks:0:1",[]]',
        b'[2000,"clicks:0:2",["clicks:0:1"]]',
    ]
