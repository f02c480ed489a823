"""The golden trees are real programs: import them and run them on the in-memory broker.

What each operation must do is asserted on the topics it writes: group_by re-keys into the
named repartition topic, take cuts bounded non-empty batches, echo copies keeping keys,
items/events reach their sinks, and bad messages land on the dead-letter topic.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
from collections import Counter
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
from golden import GOLDEN, REPO
from streamc_runtime.local import run_local
from streamc_runtime.memory import MemoryBroker, partition_for_key
from streamc_runtime.transport import TP


@pytest.fixture
def load_package() -> Iterator[Any]:
    """Imports a golden tree's package fresh, and forgets it afterwards."""
    added: list[tuple[str, str]] = []

    def load(case: str, package: str) -> ModuleType:
        root = str(GOLDEN / case / "expected")
        sys.path.insert(0, root)
        added.append((root, package))
        importlib.import_module(f"{package}.agents")
        return importlib.import_module(f"{package}.app")

    yield load
    for root, package in added:
        sys.path.remove(root)
        for name in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
            del sys.modules[name]


def jsonl(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (REPO / "samples" / name).read_text().splitlines()]


def values(broker: MemoryBroker, topic: str) -> list[Any]:
    return [json.loads(m.value) for m in broker.messages(topic) if m.value is not None]


def test_orders_sample_runs_every_operation(
    load_package: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    app = load_package("orders", "orders_worker").app
    orders, refunds, withdrawals = (
        jsonl("orders.jsonl"),
        jsonl("refunds.jsonl"),
        jsonl("withdrawals.jsonl"),
    )
    poison = [{"key": "acct-1", "raw": "{not json"}, {"key": "acct-2", "value": {"id": "x"}}]
    inputs = {
        "orders": orders + poison,
        "refunds": refunds,
        "withdrawals": withdrawals,
        "raw_events": [{"key": "k", "value": "plain bytes"}],
    }
    broker = asyncio.run(run_local(app, inputs))
    printed = capsys.readouterr().out.splitlines()

    # group_by account_id: every order re-keyed by its account, on the key's partition.
    repartition = broker.messages("orders-totals-orders-account_id-repartition")
    assert len(repartition) == len(orders)
    for message in repartition:
        account = json.loads(message.value)["account_id"]
        assert message.key == account.encode()
        assert message.partition == partition_for_key(message.key, 4)

    # take 100 within 10s | through totals: bounded, never empty, nothing lost or doubled.
    batches = values(broker, "totals")
    assert all(1 <= len(batch) <= 100 for batch in batches)
    assert Counter(o["id"] for b in batches for o in b) == Counter(o["value"]["id"] for o in orders)
    assert sum(line.startswith("batch of ") for line in printed) == len(batches)
    # A batch is cut from the agent's whole stream, not per partition: with the sample's few
    # orders, one batch holds orders of accounts on different repartition partitions.
    spread = [
        {partition_for_key(o["account_id"].encode(), 4) for o in batch} for batch in batches
    ]
    assert any(len(partitions) > 1 for partitions in spread), spread

    # echo audit, "orders.audit.all": copies of orders & refunds, keys kept, processors applied.
    for topic in ("audit.orders.v1", "orders.audit.all"):
        copies = broker.messages(topic)
        assert len(copies) == len(orders) + len(refunds)
        assert Counter(m.key for m in copies) == Counter(
            line["key"].encode() for line in orders + refunds
        )
        assert all(json.loads(m.value)["language"] for m in copies)  # add_default_language
        assert all(json.loads(m.value)["client"] for m in copies)  # add_client_info

    # where ... | to large_orders: exactly the large foreign orders.
    large = values(broker, "large_orders")
    expected_large = [
        line
        for line in orders + refunds
        if line["value"]["amount"] >= 1000
        and (line["value"].get("customer") or {}).get("country") not in (None, "NL")
    ]
    assert Counter(o["id"] for o in large) == Counter(o["value"]["id"] for o in expected_large)

    # filter | group_by hook | enumerate 1 | sink: numbered from 1.
    numbered = [line for line in printed if line.startswith("suspicious withdrawal #")]
    suspicious = [
        w for w in withdrawals if w["value"]["amount"] > 1000 and w["value"]["country"] != "NL"
    ]
    assert len(numbered) == len(suspicious) > 0

    # where | through string topic | items | sink: the key reaches the sink.
    cash = [line for line in printed if line.startswith("cash withdrawal on acct-")]
    assert len(cash) == len(broker.messages("orders.withdrawals.cash")) > 0

    # events with manual ack: every refund handled.
    assert sum("refund" in line for line in printed) >= len(refunds)

    # The two poison pills: on the dead-letter topic with their error and origin, once each
    # (the orders topic has two subscribers, but a message is dead-lettered once).
    dead = broker.messages("orders-dlq")
    assert sorted(m.value for m in dead) == sorted(
        [b"{not json", json.dumps({"id": "x"}, separators=(",", ":")).encode()]
    )
    for message in dead:
        headers = dict(message.headers)
        assert headers["streamc.source.topic"] == b"orders"
        assert headers["streamc.error"]

    # Everything consumed was committed.
    for topic in ("orders", "refunds", "withdrawals"):
        for partition in range(broker.partitions_for(topic) or 0):
            tp = TP(topic, partition)
            end = broker.end_offset(tp)
            assert broker.committed("orders", tp) == (end if end else None) or end == 0


def test_hostile_names_run(load_package: Any) -> None:
    app = load_package("hostile", "hostile_worker").app
    record = {"from": "x", "import": 3, "self": 1.0, "match": "m"}
    broker = asyncio.run(
        run_local(
            app,
            {
                "hostile.def-topic_1": [{"key": "k", "value": record}],
                "lambda": [{"key": "k", "value": {"type": record, "id": n}} for n in range(7)],
            },
        )
    )
    echoed = values(broker, "echo.1")
    assert echoed == values(broker, "app")
    (copy,) = echoed
    # The processor named `print` doubled `self`; defaults with quotes and unicode survived.
    assert copy["self"] == 2.0
    assert copy["list"] == ['a"b', "c\\d", "line\nbreak", "üñíçødé ☃", '"""']
    assert copy["Record"] == '\\"""\\'
    repartitioned = broker.messages("hostile-import-def-id-repartition")
    assert [m.key for m in repartitioned] == [b"3"]  # the key function named `id`
    assert broker.messages("hostile-dlq") == []


# -- hook_calls: how hooks are called, and what happens to what they return -------------------


def _hook_calls(load_package: Any, orders: list[tuple[str, str, int]]) -> tuple[Any, Any]:
    """Runs hook_calls on `orders` ((id, account, quantity), all on account keys) and returns
    the broker and the hooks module (whose SEEN holds what each sink received)."""
    app = load_package("hook_calls", "hook_calls_worker").app
    hooks = importlib.import_module("hook_calls_worker.hooks.hooks")
    lines = [
        {"key": account, "value": {"id": id_, "account_id": account, "quantity": quantity}}
        for id_, account, quantity in orders
    ]
    return asyncio.run(run_local(app, {"orders": lines})), hooks


def _dead(broker: MemoryBroker) -> dict[tuple[str, str], dict[str, bytes]]:
    """The dead letters of hook_calls by (agent, order id), with their headers."""
    return {
        (dict(m.headers)["streamc.agent"].decode(), json.loads(m.value)["id"]): dict(m.headers)
        for m in broker.messages("hook_calls-dlq")
    }


def _all_committed(broker: MemoryBroker, group: str, topic: str) -> bool:
    return all(
        broker.committed(group, TP(topic, p)) == (broker.end_offset(TP(topic, p)) or None)
        for p in range(broker.partitions_for(topic) or 0)
    )


def test_a_sink_whose_plain_def_returns_a_coroutine_is_awaited(load_package: Any) -> None:
    # record_retried is a plain `def` returning a coroutine (an `async def` under a retry
    # decorator): the generated agent must await it, or the work never runs while the element
    # is acked and committed. record_decorated is that `async def` named directly.
    broker, hooks = _hook_calls(load_package, [("a", "acct-1", 1), ("b", "acct-1", 2)])
    assert hooks.SEEN["retried"] == ["a", "b"]
    assert hooks.SEEN["decorated"] == ["a", "b"]
    assert hooks.SEEN["plain"] == ["a", "b"]  # the proven plain def, called directly
    assert broker.messages("hook_calls-dlq") == []
    assert _all_committed(broker, "hook_calls", "orders")


def test_a_one_parameter_sink_gets_a_tuple_whole(load_package: Any) -> None:
    broker, hooks = _hook_calls(load_package, [("a", "acct-1", 1), ("b", "acct-1", 1)])
    assert hooks.SEEN["pair"] == [("acct-1", "a"), ("acct-1", "b")]  # after items
    assert hooks.SEEN["numbered"] == [(1, "a"), (2, "b")]  # after enumerate 1
    assert broker.messages("hook_calls-dlq") == []


def test_hook_results_of_the_wrong_type_are_dead_lettered_at_their_agent(
    load_package: Any,
) -> None:
    bad = ["none", "dict", "str", "bad-field", "none-key", "dict-key", "float-key", "bool-key"]
    bad.append("none-kept")
    broker, hooks = _hook_calls(
        load_package,
        [("good", "acct-1", 1), *((b, "acct-1", 2) for b in bad), ("last", "acct-1", 3)],
    )
    declared = {
        "reprice": b"Order",
        "account_of": b"str",
        "quantity_of": b"int",
        "is_kept": b"bool",
    }
    expected = {
        ("reprice", "none"): ("reprice", b"None"),
        ("reprice", "dict"): ("reprice", b"dict"),
        ("reprice", "str"): ("reprice", b"str"),
        ("reprice", "bad-field"): ("reprice", b"Order"),
        ("by_account", "none-key"): ("account_of", b"None"),
        ("by_account", "dict-key"): ("account_of", b"dict"),
        ("by_quantity", "float-key"): ("quantity_of", b"float"),
        ("by_quantity", "bool-key"): ("quantity_of", b"bool"),
        ("kept", "none-kept"): ("is_kept", b"None"),
    }
    dead = _dead(broker)
    assert set(dead) == set(expected)
    for where, (hook, got) in expected.items():
        headers = dead[where]
        assert headers["streamc.hook"] == hook.encode()
        assert headers["streamc.hook.returns"] == declared[hook]
        assert headers["streamc.error.type"] == b"streamc_runtime.hooks.HookResultError"
        assert headers["streamc.error"].startswith(
            b"hook '%s' returned %s, declared %s" % (hook.encode(), got, declared[hook])
        )
    assert (
        b"Expected `int`, got `str` - at `$.quantity`"
        in dead[("reprice", "bad-field")]["streamc.error"]
    )
    # Only well-typed results reach topics and sinks; keys are exactly what was declared.
    all_ids = ["good", *bad, "last"]
    assert [o["id"] for o in values(broker, "repriced")] == [
        i for i in all_ids if i not in ("none", "dict", "str", "bad-field")
    ]
    by_account = broker.messages("hook_calls-by_account-orders-account_of-repartition")
    assert {m.key for m in by_account} == {b"acct-1"}
    by_quantity = broker.messages("hook_calls-by_quantity-orders-quantity_of-repartition")
    assert sorted(m.key for m in by_quantity) == sorted(
        b"%d" % q
        for i, q in zip(all_ids, [1, *[2] * len(bad), 3], strict=True)
        if i not in ("float-key", "bool-key")
    )
    assert hooks.SEEN["retried"] == [i for i in all_ids if i != "none-kept"]
    assert _all_committed(broker, "hook_calls", "orders")


def test_a_hook_raising_system_exit_or_keyboard_interrupt_dead_letters_its_element(
    load_package: Any,
) -> None:
    # reprice raises SystemExit for "exit"; record_retried raises KeyboardInterrupt (through
    # its retry wrapper) for "interrupt". Each is a hook failure: its element goes to the
    # dead-letter topic, the others go on, everything is committed.
    broker, hooks = _hook_calls(
        load_package,
        [("a", "acct-1", 1), ("exit", "acct-1", 1), ("interrupt", "acct-1", 1), ("b", "acct-1", 1)],
    )
    dead = _dead(broker)
    assert set(dead) == {("reprice", "exit"), ("kept", "interrupt")}
    assert dead[("reprice", "exit")]["streamc.error.type"] == b"SystemExit"
    assert dead[("kept", "interrupt")]["streamc.error.type"] == b"KeyboardInterrupt"
    assert [o["id"] for o in values(broker, "repriced")] == ["a", "interrupt", "b"]
    assert hooks.SEEN["retried"] == ["a", "exit", "b"]
    assert _all_committed(broker, "hook_calls", "orders")
def test_optional_fields_without_a_default_may_be_missing(load_package: Any) -> None:
    from streamc_runtime.records import value_codec

    load_package("orders", "orders_worker")
    records = importlib.import_module("orders_worker.records")
    # `customer: Customer?` has no default in orders.sdl; `country: str?` neither.
    order = value_codec(records.Order).decode(b'{"id": "o", "account_id": "a", "amount": 1}')
    assert order.customer is None
    customer = value_codec(records.Customer).decode(b'{"id": "c"}')
    assert customer == records.Customer(id="c", country=None)


LEDGER_ORDERS = [
    # id, account, amount, quantity, tip, country (None: no customer)
    ("o1", "acct-1", 10.0, 2, None, "DE"),
    ("o22", "acct-2", 5.0, 1, 1.5, None),
    ("o333", "acct-1", 2.5, 4, 0.5, "NL"),
    ("a4", "acct-1", 7.5, 1, 2.0, None),
    ("o5", "acct-2", 1.0, 3, None, "FR"),
]


def ledger_inputs() -> dict[str, list[dict[str, Any]]]:
    orders = []
    for order_id, account, amount, quantity, tip, country in LEDGER_ORDERS:
        value: dict[str, Any] = {"id": order_id, "account_id": account, "amount": amount,
                                 "quantity": quantity, "tip": tip}  # fmt: skip
        if country is not None:
            value["customer"] = {"id": "c-" + order_id, "country": country}
        # Keyed by account: one source partition per account keeps each account's order.
        orders.append({"key": account, "value": value})
    return {"orders": orders}


def test_every_aggregate_folds_into_exact_table_rows(load_package: Any) -> None:
    package = load_package("aggregates", "ledger_worker")
    app = package.app
    broker = asyncio.run(run_local(app, ledger_inputs()))
    from streamc_runtime.state import table_rows

    table = table_rows(broker, app.tables["stats"])
    rows = {k: json.loads(msgspec_json(v)) for k, v in table.items()}
    assert rows == {
        "acct-1": {
            "account": "acct-1", "orders": 3, "tipped": 2, "units": 7, "amount": 20.0,
            "tips": 2.5, "smallest": 2.5, "largest_tip": 2.0, "lowest_id": "a4",
            "highest_id": "o333", "mean": (20.0 + 10.0 + 7.5) / 3, "mean_tip": 1.25,
            "first_id": "o1", "first_country": "DE", "last_country": None,
            "longest_id": "o333", "units_seen": [2, 4, 1], "note": "kept",
        },
        "acct-2": {
            "account": "acct-2", "orders": 2, "tipped": 1, "units": 4, "amount": 6.0,
            "tips": 1.5, "smallest": 1.0, "largest_tip": 1.5, "lowest_id": "o22",
            "highest_id": "o5", "mean": (5.0 + 3.0) / 2, "mean_tip": 1.5,
            "first_id": "o22", "first_country": None, "last_country": "FR",
            "longest_id": "o22", "units_seen": [1, 3], "note": "kept",
        },
    }  # fmt: skip
    # The change stream: one row per order, in each account's order, the last one the total.
    changes: dict[str, list[dict[str, Any]]] = {}
    for message in broker.messages("stats_changes"):
        changes.setdefault(message.key.decode(), []).append(json.loads(message.value))
    assert [c["orders"] for c in changes["acct-1"]] == [1, 2, 3]
    assert [c["first_country"] for c in changes["acct-1"]] == ["DE", "DE", "DE"]
    assert [c["largest_tip"] for c in changes["acct-1"]] == [None, 0.5, 2.0]
    assert [c["units_seen"] for c in changes["acct-2"]] == [[1], [1, 3]]
    assert {k: v[-1] for k, v in changes.items()} == rows
    # The table's changelog has the table's partitions, and the repartition topic too.
    assert broker.partitions_for("ledger-stats-changelog") == 2
    assert broker.partitions_for("ledger-stats-orders-account_id-repartition") == 2


def test_a_reduce_hook_result_of_the_wrong_type_is_dead_lettered_and_not_folded(
    load_package: Any,
) -> None:
    app = load_package("aggregates", "ledger_worker").app
    stats = importlib.import_module("ledger_worker.agents.stats")
    good = stats.longer

    def longer(best: str, order: Any) -> Any:
        return None if order.id == "bad" else good(best, order)

    stats.longer = longer  # what the agent's fold calls, and its check names
    inputs = ledger_inputs()
    bad = {"id": "bad", "account_id": "acct-1", "amount": 1.0, "quantity": 9, "tip": None}
    inputs["orders"].insert(1, {"key": "acct-1", "value": bad})
    broker = asyncio.run(run_local(app, inputs))
    from streamc_runtime.state import table_rows

    rows = table_rows(broker, app.tables["stats"])
    assert (rows["acct-1"].orders, rows["acct-1"].units_seen) == (3, [2, 4, 1])
    (dead,) = broker.messages("ledger-dlq")
    headers = dict(dead.headers)
    assert json.loads(dead.value)["id"] == "bad"
    assert headers["streamc.hook"] == b"longer"
    assert headers["streamc.hook.returns"] == b"str"
    assert headers["streamc.error"] == b"hook 'longer' returned None, declared str"


def test_aggregate_on_the_source_key_counts_per_message_key(load_package: Any) -> None:
    app = load_package("aggregates", "ledger_worker").app
    inputs = {"orders": [{"key": "k1", "value": {"id": f"o{i}", "account_id": "a", "amount": 1.0,
                                                 "quantity": 1}} for i in range(3)]}  # fmt: skip
    inputs["orders"].append({"key": "k2", "value": {"id": "x", "account_id": "a", "amount": 1.0,
                                                    "quantity": 1}})  # fmt: skip
    broker = asyncio.run(run_local(app, inputs))
    from streamc_runtime.state import table_rows

    counts = table_rows(broker, app.tables["counts"])
    assert {k: v.orders for k, v in counts.items()} == {"k1": 3, "k2": 1}
    # `where orders >= 2` after the aggregate: only the second and third updates of k1.
    assert [(m.key, json.loads(m.value)) for m in broker.messages("big_counts")] == [
        (b"k1", {"orders": 2}), (b"k1", {"orders": 3})
    ]  # fmt: skip


def test_orders_sample_account_totals_are_the_exact_sums(load_package: Any) -> None:
    app = load_package("orders", "orders_worker").app
    orders = jsonl("orders.jsonl")
    broker = asyncio.run(run_local(app, {"orders": orders}))
    from streamc_runtime.state import table_rows

    expected: dict[str, tuple[int, float]] = {}
    for line in orders:
        account = line["value"]["account_id"]
        count, total = expected.get(account, (0, 0.0))
        expected[account] = (count + 1, total + line["value"]["amount"])
    rows = table_rows(broker, app.tables["totals_by_account"])
    assert {k: (r.orders, round(r.amount, 6)) for k, r in rows.items()} == {
        k: (n, round(t, 6)) for k, (n, t) in expected.items()
    }
    last: dict[str, Any] = {}
    for message in broker.messages("account_totals"):
        last[message.key.decode()] = json.loads(message.value)
    assert {k: (v["orders"], round(v["amount"], 6)) for k, v in last.items()} == {
        k: (n, round(t, 6)) for k, (n, t) in expected.items()
    }
    # The repartition topic feeding the aggregate carries each order's source position.
    for message in broker.messages("orders-account_totals-orders-account_id-repartition"):
        assert dict(message.headers)["streamc.position"].startswith(b"orders:")


def test_orders_sample_enriched_orders_carry_their_accounts_tier(load_package: Any) -> None:
    app = load_package("orders", "orders_worker").app
    orders, accounts = jsonl("orders.jsonl"), jsonl("accounts.jsonl")
    broker = asyncio.run(run_local(app, {"orders": orders, "accounts": accounts}))
    tiers = {line["key"]: line["value"]["tier"] for line in accounts}
    assert len(tiers) == 40 and {line["key"] for line in orders} == set(tiers)
    expected = {
        line["value"]["id"]: (line["key"], {"id": line["value"]["id"], "account_id":
            line["value"]["account_id"], "amount": line["value"]["amount"],
            "tier": tiers[line["key"]]})
        for line in orders
    }  # fmt: skip
    messages = broker.messages("enriched_orders")
    enriched = [(m.key.decode(), json.loads(m.value)) for m in messages]
    assert len(enriched) == len(orders)
    assert {value["id"]: (key, value) for key, value in enriched} == expected
    # Keyed like the orders, so each lands on its order's (and its account's) partition.
    assert all(m.partition == partition_for_key(m.key, 4) for m in messages)
    # The table holds each account's record (what `streamc run --table accounts_by_id=-` prints).
    from streamc_runtime.state import table_rows

    rows = table_rows(broker, app.tables["accounts_by_id"])
    assert {k: json.loads(msgspec_json(r)) for k, r in rows.items()} == {
        line["key"]: line["value"] for line in accounts
    }


def test_orders_sample_paid_orders_pair_each_order_with_its_payment_within_5_minutes(
    load_package: Any,
) -> None:
    app = load_package("orders", "orders_worker").app
    orders, payments = jsonl("orders.jsonl"), jsonl("payments.jsonl")
    broker = asyncio.run(run_local(app, {"orders": orders, "payments": payments}))
    by_id = {line["value"]["id"]: line for line in orders}
    expected = {}
    for p in payments:
        order = by_id[p["value"]["order_id"]]
        assert p["key"] == order["key"]  # keyed by the account, as the orders
        if abs(p["timestamp"] - order["timestamp"]) <= 300_000:
            value = order["value"]
            paid = {"id": value["id"], "account_id": value["account_id"],
                    "amount": value["amount"], "paid": p["value"]["amount"]}  # fmt: skip
            expected[value["id"]] = (order["key"], paid)
    assert 0 < len(expected) < len(payments)  # some payments came too late
    messages = broker.messages("paid_orders")
    paid = [(m.key.decode(), json.loads(m.value)) for m in messages]
    assert len(paid) == len(expected)  # one pair each: nothing late, nothing twice
    assert {value["id"]: (key, value) for key, value in paid} == expected
    assert broker.messages("orders-dlq") == []
    # both sides were buffered in the join's table, and every entry closed at the end
    log = broker.messages("orders-paid_orders-join-1-changelog")
    entries = {m.key for m in log if m.value is not None and not m.key.startswith(b"\x00")}
    assert len(entries) == len(orders) + len(payments)
    assert {m.key for m in log if m.value is None} == entries


def msgspec_json(value: Any) -> bytes:
    import msgspec

    return msgspec.json.encode(value)


def test_orders_sample_account_minutes_are_each_minutes_exact_totals_once(
    load_package: Any,
) -> None:
    import datetime

    app = load_package("orders", "orders_worker").app
    orders = jsonl("orders.jsonl")
    broker = asyncio.run(run_local(app, {"orders": orders}))

    def iso(ms: int) -> str:
        moment = datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    expected: dict[tuple[str, str], tuple[int, float]] = {}
    for line in orders:
        start = line["timestamp"] // 60_000 * 60_000
        slot = (line["value"]["account_id"], iso(start))
        count, total = expected.get(slot, (0, 0.0))
        expected[slot] = (count + 1, total + line["value"]["amount"])
    rows = [json.loads(m.value) for m in broker.messages("account_minutes")]
    # Final results only: one row per account and minute, each minute 60 s long.
    assert len(rows) == len(expected) == len({(r["account_id"], r["window_start"]) for r in rows})
    assert {(r["account_id"], r["window_start"]): (r["orders"], round(r["amount"], 6))
            for r in rows} == {k: (n, round(t, 6)) for k, (n, t) in expected.items()}  # fmt: skip
    assert all(
        datetime.datetime.fromisoformat(r["window_end"])
        - datetime.datetime.fromisoformat(r["window_start"]) == datetime.timedelta(minutes=1)
        for r in rows
    )
    assert 25 <= len({r["window_start"] for r in rows}) <= 31  # the orders span 30 minutes
