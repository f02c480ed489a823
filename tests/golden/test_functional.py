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


def test_optional_fields_without_a_default_may_be_missing(load_package: Any) -> None:
    from streamc_runtime.records import value_codec

    load_package("orders", "orders_worker")
    records = importlib.import_module("orders_worker.records")
    # `customer: Customer?` has no default in orders.sdl; `country: str?` neither.
    order = value_codec(records.Order).decode(b'{"id": "o", "account_id": "a", "amount": 1}')
    assert order.customer is None
    customer = value_codec(records.Customer).decode(b'{"id": "c"}')
    assert customer == records.Customer(id="c", country=None)
