"""The three pipelines in quixstreams, written the way its documentation shows.

    python quix_bench.py --pipeline p1 --bootstrap 127.0.0.1:PORT --topic T --group G --n N

Quix decodes JSON into dicts (orjson), not into typed records: that is its idiom, and what its
users run. P1 `sdf.update(count)`, P2 `sdf.group_by("account_id")` (Quix's repartition topic),
P3 a stateless batching function in `sdf.update`, P4 `sdf.group_by("account_id")` then a stateful
`sdf.apply` keeping each account's count and sum (Quix's state: RocksDB, with changelog topics,
its documented way for a running aggregate per key; its windows' `.reduce`/`.agg` need a
window). P6 re-keys the orders by account id (`sdf.group_by`) and joins them with the
accounts topic's dataframe by `sdf.join_asof(accounts, how="left")`, the join Quix offers for
enriching from a topic (its `join_lookup` reads an external database or Quix Cloud's
configuration service, not a Kafka topic); the right side lives in Quix's state (RocksDB with a
changelog topic), and Quix consumes the two topics in timestamp order, so the accounts (all
older than the orders) are stored before the first order is joined. P3: Quix has no
`take(n, within)`, and its count windows are stateful (RocksDB plus a changelog topic) and
cannot close on time, so they would measure something else. The last partial batch is closed
by the next element after 1 s; the harness waits for all N, which the final batch reaches only
once every order has arrived, so here the "within" matters only for the very last batch, and
that only if N is not a multiple of 100 (it is, in the harness).
"""

from __future__ import annotations

import time
from typing import Any

from common import Counter, parse_args
from quixstreams import Application

args, _ = parse_args()
counter = Counter(args.n)

app = Application(
    broker_address=args.bootstrap,
    consumer_group=args.group,
    auto_offset_reset="earliest",
    commit_interval=args.commit_interval,
    state_dir=args.state_dir,
    # Changelog topics back the state, as Quix runs by default; P1-P3 have no state.
    use_changelog_topics=args.pipeline in ("p4", "p6"),
    loglevel="WARNING",
    consumer_extra_config={
        "session.timeout.ms": args.session_timeout_ms,
        "heartbeat.interval.ms": args.heartbeat_interval_ms,
        "fetch.wait.max.ms": args.fetch_max_wait_ms,
    },
    # Tansu cannot serve InitProducerId (shared/design/tansu.md); the other peers run without
    # idempotence too.
    producer_extra_config={"enable.idempotence": False},
)
orders = app.topic(args.topic, value_deserializer="json")
sdf = app.dataframe(orders)


def count(_order: dict[str, Any]) -> None:
    counter.one()


if args.pipeline == "p1":
    sdf.update(count)
elif args.pipeline == "p2":
    sdf.update(lambda _order: counter.started())  # the clock starts at the first input
    sdf = sdf.group_by("account_id")
    sdf.update(count)
elif args.pipeline == "p4":
    sdf.update(lambda _order: counter.started())  # the clock starts at the first input
    sdf = sdf.group_by("account_id")

    def add(order: dict[str, Any], state: Any) -> dict[str, Any]:
        orders, amount = state.get("totals", (0, 0.0))
        orders, amount = orders + 1, amount + order["amount"]
        state.set("totals", (orders, amount))
        return {"account_id": order["account_id"], "orders": orders, "amount": amount}

    sdf = sdf.apply(add, stateful=True)
    sdf.update(lambda row: counter.row(row["account_id"], row["orders"], row["amount"]))
elif args.pipeline == "p6":
    # Keys as plain text on both sides, as the accounts topic has them: group_by would write
    # the account id as JSON (quoted), another key in another partition.
    accounts = app.dataframe(
        app.topic(args.accounts_topic, key_deserializer="str", value_deserializer="json")
    )

    def enrich(order: dict[str, Any], account: dict[str, Any] | None) -> dict[str, Any]:
        return {
            "id": order["id"],
            "account_id": order["account_id"],
            "amount": order["amount"],
            "tier": None if account is None else account["tier"],
        }

    sdf = sdf.group_by("account_id", key_serializer="str", key_deserializer="str")
    sdf = sdf.join_asof(accounts, how="left", on_merge=enrich)
    sdf.update(lambda e: counter.enriched(e["id"], e["tier"], e["amount"]))
else:
    batch: list[dict[str, Any]] = []
    started = 0.0

    def take(order: dict[str, Any]) -> None:
        global batch, started
        if not batch:
            started = time.monotonic()
        batch.append(order)
        if len(batch) == 100 or time.monotonic() - started >= 1.0:
            counter.batch(len(batch), sum(o["amount"] for o in batch))
            batch = []

    sdf.update(take)

if __name__ == "__main__":
    app.run()
