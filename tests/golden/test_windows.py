"""The windows golden tree run on the in-memory broker: each kind of window, both emit modes,
the late topic and distinct, asserted on the topics they write (docs/language.md, "Time,
windows and distinct").

These run the generated code against the runtime's windows (TIME.md section 3): `streamc run`
produces one input file in its order and closes every window at the end of the input.
"""

from __future__ import annotations

import asyncio
import datetime
import json
from typing import Any

from streamc_runtime.local import run_local
from streamc_runtime.memory import MemoryBroker
from test_functional import load_package  # noqa: F401  (the fixture)

T0 = 1_772_366_400_000  # 2026-03-01T12:00:00Z, a multiple of every window size below
S, M = 1_000, 60_000


def iso(ms: int) -> str:
    """A time as the record codec writes it: RFC 3339, UTC, milliseconds."""
    moment = datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def order(id: str, account: str, at: int, amount: float = 1.0, *, in_record: bool = True,
          paid: int | None = None, arrives: int | None = None) -> dict[str, Any]:  # fmt: skip
    """An input line: the event time in `created_at` (RFC 3339), or, with `in_record=False`,
    only in the message timestamp (`created_at` null falls back to it). The message timestamp
    is `arrives` (default: the event time); `streamc run` produces inputs in its order."""
    value = {"id": id, "account_id": account, "amount": amount,
             "created_at": iso(at) if in_record else None,
             "paid_at": None if paid is None else iso(paid)}  # fmt: skip
    return {"key": account, "value": value, "timestamp": at if arrives is None else arrives}


def outputs(broker: MemoryBroker, topic: str) -> list[tuple[str, dict[str, Any]]]:
    return [(m.key.decode(), json.loads(m.value)) for m in broker.messages(topic)
            if m.key is not None and m.value is not None]  # fmt: skip


def run(load_package: Any, orders: list[dict[str, Any]]) -> MemoryBroker:  # noqa: F811
    app = load_package("windows", "metrics_worker").app
    return asyncio.run(run_local(app, {"orders": orders}))


def test_tumbling_final_rows_once_per_window_and_late_orders_to_the_late_topic(
    load_package: Any,  # noqa: F811
) -> None:
    late = order("o5", "acct-1", T0 + 30 * S, 16.0, arrives=T0 + 80 * S)
    broker = run(load_package, [
        order("o1", "acct-1", T0 + 5 * S, 1.0),
        order("o2", "acct-1", T0 + 20 * S, 2.0, in_record=False),
        order("o3", "acct-1", T0 + 65 * S, 4.0),
        order("o4", "acct-1", T0 + 75 * S, 8.0),  # stream time 75s: [0s, 60s) + 10s closes
        late,  # in [0s, 60s), which has closed: late, never counted
    ])  # fmt: skip
    assert outputs(broker, "minute_totals") == [
        ("acct-1", {"account_id": "acct-1", "window_start": iso(T0), "window_end": iso(T0 + M),
                    "orders": 2, "amount": 3.0}),
        ("acct-1", {"account_id": "acct-1", "window_start": iso(T0 + M),
                    "window_end": iso(T0 + 2 * M), "orders": 2, "amount": 12.0}),
    ]  # fmt: skip
    assert outputs(broker, "late_orders") == [("acct-1", late["value"])]
    # With a late topic named, the late order is not dead-lettered (and o5 is not late for the
    # other agents' longer windows).
    assert list(broker.messages("metrics-dlq")) == []


def test_hopping_updates_every_window_an_order_falls_in(load_package: Any) -> None:  # noqa: F811
    broker = run(load_package, [
        order("o1", "acct-1", T0 + 1 * M, 5.0),  # in [-5m, 5m) and [0m, 10m)
        order("o2", "acct-1", T0 + 6 * M, 7.0),  # in [0m, 10m) and [5m, 15m)
    ])  # fmt: skip
    rows = sorted(((v["window_start"], v["orders"], v["largest"]) for _, v in
                   outputs(broker, "rolling_totals")))  # fmt: skip
    assert rows == [
        (iso(T0 - 5 * M), 1, 5.0),
        (iso(T0), 1, 5.0),
        (iso(T0), 2, 7.0),
        (iso(T0 + 5 * M), 1, 7.0),
    ]
    ends = {v["window_start"]: v["window_end"] for _, v in outputs(broker, "rolling_totals")}
    assert ends == {iso(T0 - 5 * M): iso(T0 + 5 * M), iso(T0): iso(T0 + 10 * M),
                    iso(T0 + 5 * M): iso(T0 + 15 * M)}  # fmt: skip


def test_sessions_split_on_the_gap_and_merge_when_an_order_bridges_them(
    load_package: Any,  # noqa: F811
) -> None:
    broker = run(load_package, [
        order("a1", "acct-1", T0, 2.0, paid=T0 + 5 * M),
        order("a2", "acct-1", T0 + 10 * M, 4.0, paid=T0 + 11 * M),
        # 30m30s after a2: a session of its own, while a1-a2 (open until 10m + 30m + 1m
        # of grace) still takes orders.
        order("a3", "acct-1", T0 + 40 * M + 30 * S, 6.0),
        # Made at 25m, it arrives at 41m and bridges the two: one session.
        order("a4", "acct-1", T0 + 25 * M, 8.0, paid=T0 + 2 * M, arrives=T0 + 41 * M),
        order("b1", "acct-2", T0, 1.0),
        order("b2", "acct-2", T0 + 2 * 60 * M, 3.0),  # two hours on: another session
    ])  # fmt: skip
    rows = outputs(broker, "visit_totals")
    by_account = {k: [v for key, v in rows if key == k] for k in ("acct-1", "acct-2")}
    (merged,) = by_account["acct-1"]
    shown = ("started", "ended", "orders", "mean", "first_id", "first_paid")
    assert {k: merged[k] for k in shown} == {
        "started": iso(T0), "ended": iso(T0 + 40 * M + 30 * S + 30 * M), "orders": 4,
        "mean": 5.0, "first_id": "a1", "first_paid": iso(T0 + 2 * M),
    }  # fmt: skip
    assert [(v["started"], v["ended"], v["orders"], v["first_id"], v["last_id"],
             v["first_paid"]) for v in by_account["acct-2"]] == [
        (iso(T0), iso(T0 + 30 * M), 1, "b1", "b1", None),
        (iso(T0 + 120 * M), iso(T0 + 150 * M), 1, "b2", "b2", None),
    ]  # fmt: skip


def test_distinct_drops_repeats_within_the_window_by_field_and_by_key(
    load_package: Any,  # noqa: F811
) -> None:
    broker = run(load_package, [
        order("o1", "acct-1", T0, paid=T0),
        order("o1", "acct-1", T0 + 10 * S, paid=T0 + 10 * S),  # the same id within 1h
        order("o2", "acct-1", T0 + 500, paid=T0 + 500),  # acct-1 again within 1s
        order("o3", "acct-1", T0 + 2 * S, paid=T0 + 2 * S),
        order("o4", "acct-2", T0 + 200, paid=T0 + 300),
        order("o5", "acct-2", T0 + 5 * S, paid=T0),  # paid before it was made: filtered
        order("o1", "acct-1", T0 + 2 * 60 * M, paid=T0 + 2 * 60 * M),  # id seen over 1h ago
    ])  # fmt: skip
    assert sorted((k, v["id"], v["created_at"]) for k, v in outputs(broker, "paid_orders")) == [
        ("acct-1", "o1", iso(T0)),
        ("acct-1", "o1", iso(T0 + 120 * M)),
        ("acct-1", "o3", iso(T0 + 2 * S)),
        ("acct-2", "o4", iso(T0 + 200)),
    ]
