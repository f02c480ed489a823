"""`streamc run` and `streamc test` apply a table topic's records in time with the stream: a join
sees the row as of its element, not the table's final rows (issue 14's determinism rule)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgspec
import pytest
from joinkit import Enriched, join_app
from rtkit import Order
from streamc.cli import main
from streamc_runtime import Stream
from streamc_runtime.local import run_local


def order(amount: float, timestamp: int, account: str = "a1") -> dict[str, Any]:
    return {
        "key": account,
        "value": {"account_id": account, "amount": amount},
        "timestamp": timestamp,
    }


def account(tier: str, timestamp: int, key: str = "a1") -> dict[str, Any]:
    return {"key": key, "value": {"account_id": key, "tier": tier}, "timestamp": timestamp}


@pytest.mark.parametrize("global_", [False, True], ids=["co-partitioned", "global"])
async def test_streamc_run_joins_each_order_with_the_row_of_its_time(global_: bool) -> None:
    orders = [
        order(1.0, 500),  # before the account exists
        order(2.0, 1000),  # the same time as the first row: the row comes first
        order(3.0, 1500),
        order(4.0, 2000),  # the same time as the update
        order(5.0, 2500),
        order(6.0, 3000, "a2"),  # another key's row, written later in its file than a1's
    ]
    accounts = [
        account("gold", 1000),
        account("platinum", 2000),
        account("silver", 2600, "a2"),
        {"key": "a1", "value": None, "timestamp": 2800},  # deleted after the last a1 order
    ]
    broker = await run_local(
        join_app(left=True, by_field=global_, global_=global_),
        [("orders", orders), ("accounts", accounts)],
    )
    got = sorted(
        (e.amount, e.tier)
        for e in (
            msgspec.json.decode(m.value or b"", type=Enriched) for m in broker.messages("enriched")
        )
    )
    assert got == [
        (1.0, None),
        (2.0, "gold"),
        (3.0, "gold"),
        (4.0, "platinum"),
        (5.0, "platinum"),
        (6.0, "silver"),
    ]


SHOP = """\
app shop

record Order {
    id: str
    account_id: str
    amount: float
}

record Account {
    account_id: str
    tier: str
}

record Enriched {
    id: str
    tier: str?
}

topic orders: Order key str partitions 2
topic accounts: Account key str partitions 2 compacted
topic enriched: Enriched key str partitions 2
table accounts_by_id: Account key str from accounts TABLE_KIND

agent enrich =
    from orders as order
    | left join accounts_by_id as account on JOIN_ON
    | select Enriched { id = order.id, tier = account.tier }
    | to enriched
"""

CASE = """\
cases:
  - name: each order sees the account rows listed before it
    inputs:
      - {topic: orders, key: a1, value: {id: o1, account_id: a1, amount: 1}}
      - {topic: accounts, key: a1, value: {account_id: a1, tier: gold}}
      - {topic: orders, key: a1, value: {id: o2, account_id: a1, amount: 2}}
      - {topic: accounts, key: a1, value: {account_id: a1, tier: platinum}}
      - {topic: accounts, key: a2, value: {account_id: a2, tier: silver}}
      - {topic: orders, key: a1, value: {id: o3, account_id: a1, amount: 3}}
      - {topic: orders, key: a2, value: {id: o4, account_id: a2, amount: 4}}
      - {topic: accounts, key: a1, value: null}
      - {topic: orders, key: a1, value: {id: o5, account_id: a1, amount: 5}}
    expect:
      enriched:
        order: set
        records:
          - {key: a1, value: {id: o1, tier: null}}
          - {key: a1, value: {id: o2, tier: gold}}
          - {key: a1, value: {id: o3, tier: platinum}}
          - {key: a2, value: {id: o4, tier: silver}}
          - {key: a1, value: {id: o5, tier: null}}
"""


@pytest.mark.parametrize("global_", [False, True], ids=["co-partitioned", "global"])
def test_streamc_test_applies_table_records_between_the_stream_records_listed_around_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], global_: bool
) -> None:
    program = SHOP.replace("TABLE_KIND", "global" if global_ else "").replace(
        "JOIN_ON", "account_id" if global_ else "key"
    )
    (tmp_path / "shop.sdl").write_text(program, encoding="utf-8")
    (tmp_path / "shop.test.yaml").write_text(CASE, encoding="utf-8")
    status = main(["test", str(tmp_path)])
    out, err = capsys.readouterr()
    assert (status, err) == (0, ""), out
    assert "1 passed" in out, out


async def test_streamc_run_passes_a_keyless_record_of_a_global_tables_topic_by() -> None:
    # A record without a key is no row; the global table must still count it as read, or
    # the run would wait for the table to reach its topic's end forever.
    orders = [order(1.0, 1000), order(2.0, 3000)]
    accounts = [
        account("gold", 500),
        {"value": {"account_id": "a1", "tier": "x"}, "timestamp": 2000},
    ]
    broker = await asyncio.wait_for(
        run_local(
            join_app(left=True, by_field=True, global_=True),
            [("orders", orders), ("accounts", accounts)],
        ),
        10,
    )
    tiers = [
        msgspec.json.decode(m.value or b"", type=Enriched).tier for m in broker.messages("enriched")
    ]
    assert sorted(tiers) == ["gold", "gold"]


async def test_streamc_run_drains_take_batches_at_the_end_of_input_not_at_table_records() -> None:
    # The runs of stream records between table records are produced one by one; a partial
    # `take` batch is drained only at the end of input, as without a table, not at each run.
    app = join_app(left=True)
    batches: list[list[float]] = []

    @app.agent(app.topics["orders"], name="batches")
    async def batch_orders(stream: Stream[Order]) -> None:
        async for values in stream.take(10, within=3600.0):
            batches.append(sorted(o.amount for o in values))

    orders = [order(1.0, 1000), order(2.0, 2000), order(3.0, 3000), order(4.0, 4000)]
    accounts = [account("gold", 500), account("silver", 2500), account("platinum", 3500)]
    broker = await run_local(app, [("orders", orders), ("accounts", accounts)])
    assert batches == [[1.0, 2.0, 3.0, 4.0]]
    tiers = sorted(
        (e.amount, e.tier)
        for e in (
            msgspec.json.decode(m.value or b"", type=Enriched) for m in broker.messages("enriched")
        )
    )
    assert tiers == [(1.0, "gold"), (2.0, "gold"), (3.0, "silver"), (4.0, "platinum")]
