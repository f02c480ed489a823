"""Windowed aggregations on the memory broker: tumbling, hopping and session windows over
event time, emit updates or final, grace and lateness, restore of windows and stream time."""

from __future__ import annotations

import gc
from typing import Any

import msgspec
from rtkit import Running
from streamc_runtime import App, Hopping, Session, Stream, Time, Tumbling
from streamc_runtime.records import value_codec
from streamc_runtime.state import POSITIONS_KEY, Table
from streamc_runtime.state.memory import MemoryStore
from streamc_runtime.transport import TP
from windowkit import Click, ClicksState, UserWindow, fold, row, rows, windows_app

CHANGELOG = "clicks-per_user-changelog"


def click(r: Running, user: str, at: int, *, partition: int = 0) -> None:
    r.broker.produce(
        "clicks", msgspec.json.encode(Click(user=user)), user.encode(), (), partition, at
    )


_decode = value_codec(UserWindow).decode


def out(r: Running) -> list[tuple[str, int, int, int]]:
    return rows([_decode(m.value) for m in r.messages("user_windows")])


async def test_tumbling_counts_emit_every_update_with_the_window_bounds() -> None:
    r = Running(windows_app(Tumbling(size=1000)))
    async with r:
        for user, at in [("a", 100), ("a", 900), ("b", 950), ("a", 1000), ("a", 2500)]:
            click(r, user, at)
        await r.idle()
    assert out(r) == [
        ("a", 0, 1000, 1),
        ("a", 0, 1000, 2),
        ("b", 0, 1000, 1),
        ("a", 1000, 2000, 1),
        ("a", 2000, 3000, 1),
    ]
    assert [m.timestamp for m in r.messages("user_windows")] == [100, 900, 950, 1000, 2500]


async def test_tumbling_emit_final_emits_each_window_once_when_stream_time_passes_it() -> None:
    r = Running(windows_app(Tumbling(size=1000, grace=200), emit="final"))
    async with r:
        for user, at in [("a", 100), ("b", 300), ("a", 900), ("a", 1100)]:
            click(r, user, at)
        await r.idle()
        assert out(r) == []  # stream time 1100 < 1000 + 200: nothing closed yet
        click(r, "b", 1200)  # stream time reaches end + grace of [0, 1000)
        await r.idle()
        assert out(r) == [("a", 0, 1000, 2), ("b", 0, 1000, 1)]
        assert {(k, w.start_ms) for k, w in r.worker.table("per_user")} == {
            ("a", 1000),
            ("b", 1000),
        }
        click(r, "a", 5000)
        await r.idle()
        assert {(k, w.start_ms) for k, w in r.worker.table("per_user")} == {("a", 5000)}
    assert out(r) == [
        ("a", 0, 1000, 2),
        ("b", 0, 1000, 1),
        ("a", 1000, 2000, 1),
        ("b", 1000, 2000, 1),
    ]
    # the final rows keep the last instant of their window as timestamp
    assert [m.timestamp for m in r.messages("user_windows")] == [999, 999, 1999, 1999]
    # closed windows left the store: tombstones in the changelog
    tombstones = [m for m in r.messages(CHANGELOG) if m.value is None]
    assert len(tombstones) == 4


async def test_emit_updates_closes_windows_without_reading_their_state_back(
    monkeypatch: Any,
) -> None:
    # With `emit updates` a closing window's state is not needed (its rows went out with
    # each update): on RocksDB a read of it would miss the cache once it was evicted.
    reads: list[bytes] = []
    get = MemoryStore.get

    def counted(self: MemoryStore, key: bytes) -> Any:
        reads.append(key)
        return get(self, key)

    monkeypatch.setattr(MemoryStore, "get", counted)
    r = Running(windows_app(Tumbling(size=1000, grace=200), partitions=1))
    async with r:
        click(r, "a", 100)
        click(r, "b", 300)
        click(r, "a", 900)  # folds into a's stored window: the one read
        await r.idle()
        click(r, "a", 5000)  # closes [0, 1000) of a and b
        await r.idle()
    assert out(r) == [
        ("a", 0, 1000, 1),
        ("b", 0, 1000, 1),
        ("a", 0, 1000, 2),
        ("a", 5000, 6000, 1),
    ]
    assert [m.key for m in r.messages(CHANGELOG) if m.value is None] == [
        b"b" + (2**63).to_bytes(8, "big"),
        b"a" + (2**63).to_bytes(8, "big"),
    ]
    assert [k for k in reads if k != POSITIONS_KEY] == [b"a" + (2**63).to_bytes(8, "big")]


async def test_hopping_windows_count_an_event_in_every_window_holding_it() -> None:
    r = Running(windows_app(Hopping(size=3000, advance=1000), emit="final"))
    async with r:
        click(r, "a", 2500)
        click(r, "a", 3100)
        click(r, "a", 20_000)
        await r.idle()
    assert out(r) == [
        ("a", 0, 3000, 1),
        ("a", 1000, 4000, 2),
        ("a", 2000, 5000, 2),
        ("a", 3000, 6000, 1),
    ]


async def test_sessions_extend_merge_across_a_bridging_event_and_close_after_the_gap() -> None:
    r = Running(windows_app(Session(gap=1000, grace=5000), emit="final"))
    async with r:
        for at in [0, 500, 3000, 2000]:  # sessions [0, 500] and [3000] stay apart; 2000 is
            click(r, "a", at)  # within 1000 of 3000 only: the session becomes [2000, 3000]
        click(r, "a", 1400)  # within 1000 of 500 and of 2000: merges everything
        await r.idle()
        assert out(r) == []
        assert r.worker.table("per_user")[("a", _w(0, 4000))].clicks == 5
        click(r, "b", 10_000)
        await r.idle()
    assert out(r) == [("a", 0, 4000, 5)]
    deleted = [m for m in r.messages(CHANGELOG) if m.value is None and m.key != POSITIONS_KEY]
    # [3000] became [2000, 3000] (start moved: old key deleted), then the merge deleted the
    # session that started at 2000, then the close deleted [0, 3000]
    assert len(deleted) == 3


def _w(start: int, end: int) -> object:
    from streamc_runtime import Window

    return Window(start, end)


async def test_a_record_past_its_windows_grace_goes_to_the_dead_letter_topic_as_late() -> None:
    r = Running(windows_app(Tumbling(size=1000, grace=500), emit="final"))
    async with r:
        click(r, "a", 1600)
        click(r, "a", 999)  # window [0, 1000) is open until stream time 1500: it is 1600
        click(r, "a", 1000)  # [1000, 2000) is open
        await r.idle()
    dead = r.messages("clicks-dlq")
    assert len(dead) == 1
    headers = dict(dead[0].headers)
    assert headers["streamc.error.type"] == b"late"
    assert headers["streamc.source.offset"] == b"1"
    assert msgspec.json.decode(dead[0].value or b"") == {"user": "a", "at": None}
    assert out(r) == []


async def test_late_records_go_to_the_late_topic_when_one_is_named() -> None:
    r = Running(windows_app(Tumbling(size=1000), emit="updates", late_topic=True))
    async with r:
        click(r, "a", 1000)
        click(r, "a", 999)  # grace 0: [0, 1000) closed at stream time 1000
        await r.idle()
    late = [value_codec(Click).decode(m.value) for m in r.messages("late_clicks")]
    assert late == [Click(user="a")]
    assert r.messages("late_clicks")[0].timestamp == 999
    assert r.messages("clicks-dlq") == []
    assert out(r) == [("a", 1000, 2000, 1)]


async def test_event_time_comes_from_the_timestamp_field_or_the_message_when_null() -> None:
    r = Running(windows_app(Tumbling(size=1000), timestamp_field="at"))
    async with r:
        data = b'{"user": "a", "at": "1970-01-01T01:00:00.250+01:00"}'
        r.broker.produce("clicks", data, b"a", (), 0, 9000)
        for at, ts in [(Time.from_ms(5500), 10), (None, 7200)]:
            data = value_codec(Click).encode(Click(user="a", at=at))
            r.broker.produce("clicks", data, b"a", (), 0, ts)
        await r.idle()
    assert out(r) == [("a", 0, 1000, 1), ("a", 5000, 6000, 1), ("a", 7000, 8000, 1)]


async def test_windows_and_stream_time_are_restored_after_revocation() -> None:
    app = windows_app(Tumbling(size=1000), emit="final", partitions=1)
    a = Running(app)
    async with a:
        click(a, "a", 100)
        click(a, "b", 800)
        await a.idle()
    # a new worker restores the open windows and the stream time (800) from the changelog
    b = Running(app, broker=a.broker)
    async with b:
        assert out(b) == []
        click(b, "a", 300)  # not late: [0, 1000) is still open
        click(b, "a", 1000)  # closes [0, 1000) for both keys
        await b.idle()
    assert out(b) == [("a", 0, 1000, 2), ("b", 0, 1000, 1)]
    assert b.messages("clicks-dlq") == []


async def test_restored_stream_time_makes_an_old_record_late_after_restart() -> None:
    app = windows_app(Tumbling(size=1000), emit="final", partitions=1)
    a = Running(app)
    async with a:
        click(a, "a", 2500)
        await a.idle()
    b = Running(app, broker=a.broker)
    async with b:
        click(b, "a", 100)  # stream time restored as 2500: [0, 1000) closed long ago
        await b.idle()
    assert [dict(m.headers)["streamc.error.type"] for m in b.messages("clicks-dlq")] == [b"late"]


async def test_an_update_event_carries_the_decoded_key_and_the_row() -> None:
    # `| aggregate ... window ... | events()`: the event of an update is the element's own
    # when it says the same (key, position, timestamp); its key decoded as the table's key.
    app = App("keys")
    clicks = app.topic("clicks", key_type=str, value_type=Click, partitions=1)
    table: Table[str, ClicksState] = app.table(
        "per_user",
        key_type=str,
        value_type=UserWindow,
        state_type=ClicksState,
        partitions=1,
        window=Tumbling(size=1000),
    )
    seen: list[tuple[object, int, int, int]] = []

    @app.agent(clicks, name="per_user")
    async def per_user(stream: Stream[Click]) -> None:
        async for event in stream.aggregate(table, fold=fold, row=row).events():
            m = event.message
            seen.append((event.key, event.value.clicks, m.offset, m.timestamp))

    r = Running(app)
    async with r:
        for at in (100, 900, 1500):
            click(r, "a", at)
        await r.idle()
    assert seen == [("a", 1, 0, 100), ("a", 2, 1, 900), ("a", 1, 2, 1500)]
    assert r.broker.committed("keys", TP("clicks", 0)) == 3


async def test_stored_windows_are_not_walked_by_the_cycle_collector() -> None:
    # A store holds one value per open window; full collections must not walk them all.
    r = Running(windows_app(Tumbling(size=1000, grace=10_000)))
    async with r:
        for at in (100, 1100, 2100):
            click(r, "a", at)
        await r.idle()
        stored = [
            w for h in r.worker.tables.tables["per_user"].held.values() for _, w in h.store.items()
        ]
    assert [w.end for w in stored] == [1000, 2000, 3000]
    assert [gc.is_tracked(w) for w in stored] == [False, False, False]


async def test_a_new_window_is_folded_without_a_store_lookup(monkeypatch: Any) -> None:
    # The partition's index knows its stored windows: a window not in it is new, and looking
    # it up would cost a RocksDB read (a miss) per new window.
    looked_up: list[bytes] = []
    get = MemoryStore.get

    def counting_get(self: MemoryStore, key: bytes) -> Any:
        looked_up.append(key)
        return get(self, key)

    monkeypatch.setattr(MemoryStore, "get", counting_get)
    r = Running(windows_app(Tumbling(size=1000, grace=10_000), partitions=1))
    async with r:
        click(r, "a", 100)
        click(r, "a", 1100)
        await r.idle()
        assert looked_up == []
        click(r, "a", 900)  # into the stored window [0, 1000)
        await r.idle()
    assert looked_up == [b"a" + (2**63).to_bytes(8, "big")]
    assert out(r)[-1] == ("a", 0, 1000, 2)
