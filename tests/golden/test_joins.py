"""The joins golden tree run on the in-memory broker: `select` builds the declared record from
the element (docs/language.md, "Joins and select"), asserted on the topic it writes."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from streamc_runtime.local import run_local
from streamc_runtime.memory import MemoryBroker
from test_functional import load_package  # noqa: F401  (the fixture)


def outputs(broker: MemoryBroker, topic: str) -> list[tuple[str, dict[str, Any]]]:
    return [(m.key.decode(), json.loads(m.value)) for m in broker.messages(topic)
            if m.key is not None and m.value is not None]  # fmt: skip


def order(id: str, account: str, amount: float, quantity: int,
          customer: dict[str, Any] | None, at: int) -> dict[str, Any]:  # fmt: skip
    value = {"id": id, "account_id": account, "amount": amount, "quantity": quantity,
             "customer": customer}  # fmt: skip
    return {"key": id, "value": value, "timestamp": at}


def test_select_builds_the_record_from_expressions_keeping_the_key(
    load_package: Any,  # noqa: F811
) -> None:
    app = load_package("joins", "enrich_worker").app
    broker = asyncio.run(run_local(app, {"orders": [
        order("o1", "acct-1", 10.0, 3, {"country": "FR", "vip": True}, 1_000),
        order("o2", "acct-2", 0.0, 1, None, 2_000),  # dropped by the `where`
        order("o3", "acct-2", 150.0, 2, None, 3_000),
    ]}))  # fmt: skip
    assert outputs(broker, "slim_orders") == [
        ("o1", {"id": "o1", "total": 12.0, "units": 3, "country": "FR", "channel": "web",
                "large": False}),
        # A path through a null record is null; the left-out field keeps its default.
        ("o3", {"id": "o3", "total": 180.0, "units": 2, "country": None, "channel": "web",
                "large": True}),
    ]  # fmt: skip
    # An int fills a float field as a float, on the wire too.
    assert b'"units":3.0' in next(iter(broker.messages("slim_orders"))).value


def test_left_join_by_key_passes_misses_with_a_null_row_and_global_join_by_field_drops_them(
    load_package: Any,  # noqa: F811
) -> None:
    app = load_package("joins", "enrich_worker").app

    def account(id: str, tier: str, at: int) -> dict[str, Any]:
        return {"key": id, "value": {"account_id": id, "tier": tier, "country": "FR"},
                "timestamp": at}  # fmt: skip

    def by_account(o: dict[str, Any]) -> dict[str, Any]:
        return {**o, "key": o["value"]["account_id"]}

    orders = [
        order("o1", "acct-1", 10.0, 1, None, 5_000),
        order("o2", "acct-2", 20.0, 1, None, 6_000),  # no such account: a left join's miss
        order("o3", "acct-3", 30.0, 1, None, 7_000),  # a blocked account: dropped by `where`
    ]
    broker = asyncio.run(run_local(app, {
        "accounts": [account("acct-1", "gold", 1_000), account("acct-3", "blocked", 1_000)],
        "regions": [{"key": "acct-1", "value": {"code": "acct-1", "name": "west"},
                     "timestamp": 1_000}],
        "orders_by_account": [by_account(o) for o in orders],
        "orders": orders,
    }))  # fmt: skip
    assert outputs(broker, "enriched") == [
        ("acct-1", {"id": "o1", "amount": 10.0, "tier": "gold"}),
        ("acct-2", {"id": "o2", "amount": 20.0, "tier": None}),
    ]
    # An inner join drops an element without a row; the key stays the order's.
    assert outputs(broker, "regional") == [("o1", {"id": "o1", "region": "west"})]


def test_left_stream_join_pairs_orders_with_payments_within_the_window_and_closes_the_rest(
    load_package: Any,  # noqa: F811
) -> None:
    app = load_package("joins", "enrich_worker").app

    def payment(id: str, amount: float, at: int) -> dict[str, Any]:  # keyed by the order
        return {"key": id, "value": {"order_id": id, "amount": amount}, "timestamp": at}

    broker = asyncio.run(run_local(app, {
        "orders": [
            order("o1", "acct-1", 10.0, 1, None, 60_000),
            order("o2", "acct-2", 20.0, 1, None, 61_000),  # paid 6 minutes later: too late
            order("o3", "acct-3", 30.0, 1, None, 62_000),  # never paid
        ],
        "payments": [
            {"key": "o1", "value": {"order_id": "o1", "amount": 9.5}, "timestamp": 30_000},
            payment("o2", 20.0, 61_000 + 360_000),
        ],
    }))  # fmt: skip
    # o1's payment came first (within 5 minutes): the pair when the order arrives; o2 and o3
    # found none in their windows: each once, its payment null (at the end of input at the
    # latest); the late payment alone is not emitted by a left join
    assert sorted(outputs(broker, "settled")) == [
        ("o1", {"id": "o1", "amount": 10.0, "paid": 9.5}),
        ("o2", {"id": "o2", "amount": 20.0, "paid": None}),
        ("o3", {"id": "o3", "amount": 30.0, "paid": None}),
    ]
    assert broker.messages("late_orders") == []
