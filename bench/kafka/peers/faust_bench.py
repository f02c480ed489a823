"""The three pipelines in faust-streaming, written the way its documentation shows.

    python faust_bench.py --pipeline p1 --bootstrap 127.0.0.1:PORT --topic T --group G --n N

An `Order` faust.Record decoded from JSON (Faust picks orjson when installed), one agent per
pipeline: P1 `async for order in stream`, P2 `stream.group_by(Order.account_id)` (Faust's
repartition topic), P3 `stream.take(100, within=1)`, P4 the same `group_by` into a `Table` of
[count, sum] per account (its changelog topic; `--store memory` or `rocksdb`, which Faust runs
on rocksdict when python-rocksdb is absent). P6: Faust has no join; the idiomatic way is a
`Table` of accounts that an agent on the accounts topic fills, and a lookup in the orders
agent after the same `group_by` (a table is partitioned by key: an order must be handled in
its account's partition). Faust reads its topics in no particular order across them: an
order handled before its account's record misses the tier, and the harness's check fails the
run (waiting in the orders agent is no way out: Faust stops handing records to every agent
while one agent's queue is full). In practice the group_by's first rebalance delays the orders
by seconds, and the accounts are in by then. Offsets are committed by Faust every
`--commit-interval` seconds; no web server.
"""

from __future__ import annotations

import sys

import faust
from common import Counter, parse_args, say

args, extra = parse_args(store={"choices": ["memory", "rocksdb"], "default": "memory"})
counter = Counter(args.n)

app = faust.App(
    args.group,
    broker=f"kafka://{args.bootstrap}",
    datadir=args.state_dir,
    store=f"{extra['store']}://",
    web_enabled=False,
    topic_partitions=4,
    consumer_auto_offset_reset="earliest",
    broker_commit_interval=args.commit_interval,
    broker_session_timeout=args.session_timeout_ms / 1000,
    broker_heartbeat_interval=args.heartbeat_interval_ms / 1000,
    # Faust's default producer acks is -1 (all) already; idempotence is off by default.
)


class Order(faust.Record, serializer="json"):
    id: str
    account_id: str
    amount: float
    currency: str


orders = app.topic(args.topic, value_type=Order, partitions=4)
repartition = app.topic(
    f"{args.group}-account_id-repartition", value_type=Order, partitions=4, internal=True
)

if args.pipeline == "p1":

    @app.agent(orders)
    async def p1(stream: faust.StreamT[Order]) -> None:
        async for _order in stream:
            counter.one()

elif args.pipeline == "p2":

    @app.agent(orders)
    async def p2(stream: faust.StreamT[Order]) -> None:
        stream.add_processor(lambda order: counter.started() or order)  # clock starts here
        # An explicit topic: Faust's default name is derived from the input topic alone, which
        # every repeat shares; the group id keeps each run's repartition topic its own.
        async for _order in stream.group_by(Order.account_id, topic=repartition):
            counter.one()

elif args.pipeline == "p4":
    totals = app.Table("totals", partitions=4)

    @app.agent(orders)
    async def p4(stream: faust.StreamT[Order]) -> None:
        stream.add_processor(lambda order: counter.started() or order)  # clock starts here
        async for order in stream.group_by(Order.account_id, topic=repartition):
            count, amount = totals.get(order.account_id) or (0, 0.0)
            count, amount = count + 1, amount + order.amount
            totals[order.account_id] = (count, amount)
            counter.row(order.account_id, count, amount)

elif args.pipeline == "p6":

    class Account(faust.Record, serializer="json"):
        account_id: str
        tier: str
        country: str

    accounts_topic = app.topic(args.accounts_topic, key_type=str, value_type=Account, partitions=4)
    accounts = app.Table("accounts", key_type=str, value_type=Account, partitions=4)

    @app.agent(accounts_topic)
    async def load_accounts(stream: faust.StreamT[Account]) -> None:
        async for key, account in stream.items():
            accounts[key] = account

    @app.agent(orders)
    async def p6(stream: faust.StreamT[Order]) -> None:
        async for order in stream.group_by(Order.account_id, topic=repartition):
            account = accounts.get(order.account_id)
            counter.enriched(order.id, None if account is None else account.tier, order.amount)

else:

    @app.agent(orders)
    async def p3(stream: faust.StreamT[Order]) -> None:
        async for batch in stream.take(100, within=1):
            counter.batch(len(batch), sum(o.amount for o in batch))


@app.on_before_shutdown.connect
def _final_count(sender: faust.App, **_kwargs: object) -> None:
    # Faust's worker leaves through os._exit, so Counter's atexit report never runs.
    say("exit", count=counter.count)


if __name__ == "__main__":
    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn", "--without-web"]
    app.main()
