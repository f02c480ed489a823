"""A windowed aggregate checks its reduce hooks' results as the plain aggregate does: a result
of the wrong type dead-letters the element (with the hook headers) before any of its windows
is written, so the changelog never holds a state the next restore cannot decode."""

from __future__ import annotations

from typing import Any

import msgspec
from rtkit import Running
from streamc_runtime import App, Hopping, Record, Stream, Time, Window
from streamc_runtime.state import POSITIONS_KEY


class Visit(Record, kw_only=True):
    user: str
    page: str


class Longest(Record, kw_only=True):
    user: str
    window_start: Time
    longest: str


class LongestState(Record, kw_only=True):
    longest: str = ""


def longer(best: str, visit: Visit) -> Any:
    if visit.page == "bad":
        return None  # a forgotten return: declared `-> str`
    return visit.page if len(visit.page) > len(best) else best


def fold(state: LongestState, visit: Visit) -> LongestState:
    state.longest = longer(state.longest, visit)
    return state


def row(key: str, window: Window, state: LongestState) -> Longest:
    return Longest(user=key, window_start=window.start, longest=state.longest)


async def test_a_windowed_reduce_result_of_the_wrong_type_is_dead_lettered_in_no_window() -> None:
    app = App("site")
    src = app.topic("visits", key_type=str, value_type=Visit, partitions=1)
    table = app.table(
        "longest",
        key_type=str,
        value_type=Longest,
        state_type=LongestState,
        partitions=1,
        window=Hopping(size=2000, advance=1000),
    )

    @app.agent(src, name="longest")
    async def agent(stream: Stream[Visit]) -> None:
        returns = {"longest": (longer, str)}
        async for _ in stream.aggregate(table, fold=fold, row=row, returns=returns):
            pass

    r = Running(app)
    async with r:
        for page, at in (("ab", 1500), ("bad", 1600), ("abc", 1700)):
            r.broker.produce(
                "visits", msgspec.json.encode(Visit(user="u", page=page)), b"u", (), 0, at
            )
        await r.idle()
    dead = r.messages("site-dlq")
    assert len(dead) == 1
    headers = dict(dead[0].headers)
    assert headers["streamc.hook"] == b"longer"
    assert headers["streamc.hook.returns"] == b"str"
    assert headers["streamc.error.type"] == b"streamc_runtime.hooks.HookResultError"
    assert headers["streamc.source.offset"] == b"1"
    changelog = [
        (int.from_bytes(m.key[-8:], "big") - 2**63, m.value)
        for m in r.messages("site-longest-changelog")
        if m.key != POSITIONS_KEY and m.key is not None
    ]
    assert changelog == [
        (0, b'[2000,{"longest":"ab"}]'),
        (1000, b'[3000,{"longest":"ab"}]'),
        (0, b'[2000,{"longest":"abc"}]'),
        (1000, b'[3000,{"longest":"abc"}]'),
    ]
    assert r.committed("visits") == {0: 3}
