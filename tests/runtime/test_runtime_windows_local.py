"""`run_local` (the engine of `streamc run`) with windows: inputs of several files in
timestamp order, ties in file order, and every window closed at the end of input."""

from __future__ import annotations

from streamc_runtime import Tumbling
from streamc_runtime.local import run_local
from streamc_runtime.records import value_codec
from windowkit import UserWindow, rows, windows_app

_decode = value_codec(UserWindow).decode


def _line(user: str, ts: int | str) -> dict[str, object]:
    return {"key": user, "value": {"user": user}, "timestamp": ts, "partition": 0}


async def test_inputs_of_several_files_are_produced_in_timestamp_order_ties_in_file_order() -> (
    None
):
    app = windows_app(Tumbling(size=1000), partitions=1)
    first = [_line("a", 100), _line("t1", 3000), _line("a", 2000)]
    second = [_line("b", 50), _line("t2", 3000), _line("b", "1970-01-01T00:00:02.500Z")]
    broker = await run_local(app, [("clicks", first), ("clicks", second)], close_windows=False)
    produced = [(m.key, m.timestamp) for m in broker.messages("clicks")]
    assert produced == [
        (b"b", 50),
        (b"a", 100),
        (b"a", 2000),
        (b"b", 2500),
        (b"t1", 3000),
        (b"t2", 3000),
    ]
    # in file order a@2000 would come after t1@3000 and be late; in time order none is
    assert broker.messages("clicks-dlq") == []


async def test_end_of_input_closes_every_window_so_final_rows_come_out() -> None:
    app = windows_app(Tumbling(size=1000, grace=60_000), emit="final", partitions=2)
    lines = [_line("a", 100), _line("b", 200), _line("a", 1500)]
    broker = await run_local(app, {"clicks": lines})
    got = sorted(rows([_decode(m.value) for m in broker.messages("user_windows")]))
    assert got == [("a", 0, 1000, 1), ("a", 1000, 2000, 1), ("b", 0, 1000, 1)]
    assert [m for m in broker.messages("clicks-per_user-changelog") if m.value is None] != []


async def test_no_close_windows_leaves_the_final_rows_unemitted() -> None:
    app = windows_app(Tumbling(size=1000, grace=60_000), emit="final", partitions=2)
    lines = [_line("a", 100), _line("b", 200), _line("a", 1500)]
    broker = await run_local(app, {"clicks": lines}, close_windows=False)
    assert broker.messages("user_windows") == []
