"""A `streamc.position` header that streamc did not write (another producer's) cannot place an
element for the skip rule: every stateful operation dead-letters that element and goes on,
where the header's parse used to stop the worker, again at every restart. (The plain
aggregate's case: `test_runtime_aggregate_runs.py`.)"""

from __future__ import annotations

import msgspec
import pytest
from rtkit import Running
from streamc_runtime import Tumbling
from streamc_runtime.state import POSITION_HEADER
from test_runtime_distinct import dedup_app
from windowkit import Click, windows_app

BAD = [b"garbage", b"5", b"clicks:0:x", b"\xff:0:5", b"clicks:zero:5"]


def click(r: Running, user: str, at: int, headers: list[tuple[str, bytes]] | None = None) -> None:
    r.broker.produce(
        "clicks", msgspec.json.encode(Click(user=user)), user.encode(), headers or [], 0, at
    )


def dead(r: Running, app: str) -> list[tuple[bytes | None, bytes, bytes]]:
    """(key, position header, error type) of each dead letter."""
    out = []
    for m in r.messages(f"{app}-dlq"):
        headers = dict(m.headers)
        out.append((m.key, headers[POSITION_HEADER], headers["streamc.error.type"]))
    return out


@pytest.mark.parametrize("mark", BAD, ids=repr)
async def test_a_windowed_aggregate_dead_letters_an_element_with_an_unreadable_position(
    mark: bytes,
) -> None:
    r = Running(windows_app(Tumbling(size=1000)))
    async with r:
        click(r, "a", 100)
        click(r, "a", 200, [(POSITION_HEADER, mark)])
        click(r, "a", 300)
        await r.idle()
        assert r.worker.failure is None
        await r.worker.commit()
        assert r.committed("clicks") == {0: 3, 1: 0}
    assert dead(r, "clicks") == [(b"a", mark, b"ValueError")]
    windows = [msgspec.json.decode(m.value or b"") for m in r.messages("user_windows")]
    assert [(w["user"], w["clicks"]) for w in windows] == [("a", 1), ("a", 2)]


@pytest.mark.parametrize("mark", BAD, ids=repr)
async def test_distinct_dead_letters_an_element_with_an_unreadable_position(mark: bytes) -> None:
    r = Running(dedup_app())
    async with r:
        click(r, "a", 0)
        click(r, "b", 10, [(POSITION_HEADER, mark)])
        click(r, "b", 20)
        await r.idle()
        assert r.worker.failure is None
    assert dead(r, "dedup") == [(b"b", mark, b"ValueError")]
    assert [m.timestamp for m in r.messages("unique")] == [0, 20]
