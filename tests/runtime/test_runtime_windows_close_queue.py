"""The queue of windows waiting to close: one entry per close time however many keys share it,
and the windows of one close time closed in store-key order (their order before a crash and
after it, whatever order they were opened or restored in)."""

from __future__ import annotations

import msgspec
from rtkit import Running
from streamc_runtime import Tumbling
from streamc_runtime.records import value_codec
from streamc_runtime.state.memory import MemoryStore
from streamc_runtime.state.table import _Held
from streamc_runtime.state.window_types import Windowed, window_key
from streamc_runtime.state.windows import _Index
from windowkit import Click, ClicksState, UserWindow, rows, windows_app

_decode = value_codec(UserWindow).decode


def test_windows_sharing_a_close_time_take_one_queue_entry_between_them() -> None:
    store = MemoryStore(value_codec(Windowed[ClicksState]).decode)
    # 300 keys' windows of one minute, and 2 of the next: restored from the store.
    for i in range(300):
        store.put(window_key(b"user%03d" % i, 0), Windowed(60_000, ClicksState(clicks=1)), b"")
    for user in (b"a", b"b"):
        store.put(window_key(user, 60_000), Windowed(120_000, ClicksState(clicks=1)), b"")
    index = _Index(_Held(store), 1_000, sessions=False)
    assert sorted(index.heap) == [61_000, 121_000]
    assert len(index.due[61_000]) == 300
    assert sorted(index.due[121_000]) == [window_key(b"a", 60_000), window_key(b"b", 60_000)]
    index.add(window_key(b"c", 60_000), 121_000)
    index.add(window_key(b"c", 60_000), 121_000)  # queued already: no second entry
    assert sorted(index.heap) == [61_000, 121_000]
    assert len(index.due[121_000]) == 3


async def test_windows_sharing_a_close_time_close_in_key_order_not_opening_order() -> None:
    r = Running(windows_app(Tumbling(size=1000), emit="final", partitions=1))
    async with r:
        for user, at in [("c", 100), ("a", 200), ("d", 300), ("b", 400), ("e", 2500)]:
            r.broker.produce(
                "clicks", msgspec.json.encode(Click(user=user)), user.encode(), (), 0, at
            )
        await r.idle()
    assert rows([_decode(m.value) for m in r.messages("user_windows")]) == [
        ("a", 0, 1000, 1),
        ("b", 0, 1000, 1),
        ("c", 0, 1000, 1),
        ("d", 0, 1000, 1),
    ]
    # Tombstones are written in close order reversed (`_Closing.flush`).
    tombstones = [m.key for m in r.messages("clicks-per_user-changelog") if m.value is None]
    assert tombstones == [window_key(u, 0) for u in (b"d", b"c", b"b", b"a")]
