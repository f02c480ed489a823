"""Windowed state restored by a new worker: session windows from the changelog (memory and
RocksDB stores), merged across the restore; and a worker with `state_dir` (RocksDB) that
restores its windows and stream time from its checkpoint plus the changelog's tail."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import msgspec
import pytest
from rtkit import Running
from streamc_runtime import Session, Tumbling
from streamc_runtime.records import value_codec
from streamc_runtime.state import POSITIONS_KEY
from streamc_runtime.state.event_time import STREAM_TIME
from streamc_runtime.state.window_types import split_key
from streamc_runtime.transport import TP
from test_runtime_tables import db_contents
from windowkit import Click, UserWindow, rows, windows_app

CHANGELOG = "clicks-per_user-changelog"
_decode = value_codec(UserWindow).decode


def click(r: Running, user: str, at: int) -> None:
    r.broker.produce("clicks", msgspec.json.encode(Click(user=user)), user.encode(), (), 0, at)


def out(r: Running) -> list[tuple[str, int, int, int]]:
    return rows([_decode(m.value) for m in r.messages("user_windows")])


def stored(r: Running) -> dict[tuple[str, int, int], int]:
    """The worker's windowed table: {(user, start, end): clicks}."""
    return {(k, w.start_ms, w.end_ms): s.clicks for (k, w), s in r.worker.table("per_user").items()}


def tombstones(r: Running) -> list[tuple[str, int]]:
    return [
        (split_key(m.key)[0].decode(), split_key(m.key)[1])
        for m in r.messages(CHANGELOG)
        if m.value is None and m.key is not None and m.key != POSITIONS_KEY
    ]


@pytest.mark.parametrize("store", ["memory", "rocksdb"])
async def test_sessions_restored_from_the_changelog_merge_with_a_bridging_event(
    store: str, tmp_path: Path
) -> None:
    app = windows_app(Session(gap=1000, grace=2000), emit="final", partitions=1)

    def options(n: int) -> dict[str, Any]:
        # a fresh RocksDB directory per worker: each restores from the changelog alone
        return {"state_dir": tmp_path / str(n)} if store == "rocksdb" else {}

    a = Running(app, **options(1))
    async with a:
        click(a, "a", 0)
        click(a, "a", 1800)  # 800 past the first session's reach: a session of its own
        click(a, "b", 1500)
        await a.idle()
        assert stored(a) == {("a", 0, 1000): 1, ("a", 1800, 2800): 1, ("b", 1500, 2500): 1}
    b = Running(app, a.broker, **options(2))
    async with b:
        await b.idle()
        # restored: both sessions of a, and the stream time (1800) with them
        assert stored(b) == {("a", 0, 1000): 1, ("a", 1800, 2800): 1, ("b", 1500, 2500): 1}
        click(b, "a", 900)  # within the gap of 0 and of 1800: merges the two restored ones
        await b.idle()
        assert stored(b) == {("a", 0, 2800): 3, ("b", 1500, 2500): 1}
    assert tombstones(b) == [("a", 1800)]  # the merged-away session left the changelog
    c = Running(app, a.broker, **options(3))
    async with c:
        await c.idle()
        assert stored(c) == {("a", 0, 2800): 3, ("b", 1500, 2500): 1}
        click(c, "c", 10_000)  # stream time passes every window's end + grace
        await c.idle()
    assert out(c) == [("b", 1500, 2500, 1), ("a", 0, 2800, 3)]  # in window-end order, once
    assert c.messages("clicks-dlq") == []


async def test_rocksdb_windows_restore_from_the_checkpoint_and_the_changelog_tail(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = windows_app(Tumbling(size=1000, grace=500), emit="final", partitions=1)
    r = Running(app, state_dir=tmp_path)
    async with r:
        for user, at in [("a", 100), ("b", 200), ("a", 1100), ("a", 1700)]:
            click(r, user, at)  # 1700 closes [0, 1000) for a and b
        await r.idle()
    assert out(r) == [("a", 0, 1000, 1), ("b", 0, 1000, 1)]
    # the stop checkpointed the store: the open window and the stream time, nothing closed
    items, mark = db_contents(tmp_path / "clicks" / "per_user" / "0")
    assert {split_key(k): msgspec.json.decode(v) for k, v in items.items()} == {
        (b"a", 1000): [2000, {"clicks": 2}]
    }
    assert mark is not None and mark["positions"][STREAM_TIME] == 1700
    caplog.set_level(logging.INFO, logger="streamc")
    reopened = Running(app, r.broker, state_dir=tmp_path)
    async with reopened:
        await reopened.idle()
        assert stored(reopened) == {("a", 1000, 2000): 2}
        click(reopened, "b", 400)  # late: the checkpoint's stream time (1700) closed [0, 1000)
        await reopened.idle()
    restored = [m for m in caplog.messages if m.startswith("restored table per_user[0]")]
    assert restored[0].startswith("restored table per_user[0]: 0 records")
    caplog.clear()
    # a worker without the state dir (memory store) writes more changelog meanwhile
    other = Running(app, r.broker)
    async with other:
        click(other, "b", 1200)
        click(other, "a", 2600)  # stream time 2600: closes [1000, 2000) (a: 2, b: 1)
        click(other, "c", 2700)
        await other.idle()
    assert out(other)[2:] == [("a", 1000, 2000, 2), ("b", 1000, 2000, 1)]
    checkpointed, end = mark["offset"], r.broker.end_offset(TP(CHANGELOG, 0))
    caplog.clear()
    again = Running(app, r.broker, state_dir=tmp_path)
    async with again:
        await again.idle()
        # the checkpoint's window [1000, 2000) of a was closed by the tail: gone
        assert stored(again) == {("a", 2000, 3000): 1, ("c", 2000, 3000): 1}
        click(again, "a", 1900)  # late: the tail's stream time (2700) closed [1000, 2000)
        click(again, "a", 3600)  # closes [2000, 3000)
        await again.idle()
    restoring = [m for m in caplog.messages if m.startswith("restoring table per_user[0]")]
    assert restoring == [
        f"restoring table per_user[0] from {CHANGELOG}[0] at offset {checkpointed}"
    ]
    restored = [m for m in caplog.messages if m.startswith("restored table per_user[0]")]
    assert restored[0].startswith(f"restored table per_user[0]: {end - checkpointed} records")
    assert out(again)[4:] == [("a", 2000, 3000, 1), ("c", 2000, 3000, 1)]
    late = again.messages("clicks-dlq")
    assert [dict(m.headers)["streamc.error.type"] for m in late] == [b"late", b"late"]
    assert [dict(m.headers)["streamc.position"] for m in late] == [b"clicks:0:4", b"clicks:0:8"]
