"""A table over a user's topic reads data a producer wrote: a record that does not decode is
dead-lettered once per reader and leaves its key's row as it was, whether it is read while
restoring, while a global table is read at start, or while either kind follows its topic; the
worker keeps going."""

from __future__ import annotations

import msgspec
import pytest
from joinkit import Account, Enriched, join_app
from rtkit import Order, wait_for
from streamc_runtime.memory import MemoryBroker, MemoryTransport
from streamc_runtime.worker import Worker

BAD = b'{"account_id": "a1", "tier": 7}'  # tier is not a str


def _account(key: str, tier: str) -> bytes:
    return msgspec.json.encode(Account(account_id=key, tier=tier))


def _headers(m: object) -> dict[str, bytes]:
    return dict(getattr(m, "headers"))  # noqa: B009 - MemoryMessage headers


@pytest.mark.parametrize("global_", [False, True], ids=["co-partitioned", "global"])
async def test_a_bad_record_read_at_start_is_dead_lettered_and_the_row_before_it_stays(
    global_: bool,
) -> None:
    app = join_app(global_=global_, partitions=1)
    broker = MemoryBroker()
    for topic in app.topics.values():
        broker.create_topic(topic.name, topic.partitions, topic.config)
    broker.produce("accounts", _account("a1", "gold"), b"a1")
    broker.produce("accounts", BAD, b"a1")  # offset 1: bad, a1 stays gold
    broker.produce("accounts", _account("a2", "silver"), b"a2")
    worker = Worker(app, MemoryTransport(broker, "shop"), stats_interval=0)
    await worker.start()
    try:
        for key in ("a1", "a2"):
            order = msgspec.json.encode(Order(account_id=key, amount=1.0))
            broker.produce("orders", order, key.encode())
        await wait_for(lambda: len(broker.messages("enriched")) == 2)
        tiers = {
            (m.key or b"").decode(): msgspec.json.decode(m.value or b"", type=Enriched).tier
            for m in broker.messages("enriched")
        }
        assert tiers == {"a1": "gold", "a2": "silver"}
        dead = broker.messages("shop-dlq")
        assert [(m.key, m.value) for m in dead] == [(b"a1", BAD)]
        headers = _headers(dead[0])
        assert headers["streamc.source.topic"] == b"accounts"
        assert headers["streamc.source.offset"] == b"1"
        assert headers["streamc.agent"] == b"table accounts_by_id"
        assert headers["streamc.error.type"] == b"msgspec.ValidationError"
        assert worker.running
    finally:
        await worker.stop()


async def test_a_bad_record_a_restore_reads_again_is_skipped_not_dead_lettered_twice() -> None:
    # A co-partitioned table's topic is consumed through the group as well: the first worker
    # dead-letters the bad record there and commits past it; a restore by the next one reads
    # it again and only logs it.
    app = join_app(partitions=1)
    broker = MemoryBroker()
    for topic in app.topics.values():
        broker.create_topic(topic.name, topic.partitions, topic.config)
    broker.produce("accounts", _account("a1", "gold"), b"a1")
    broker.produce("accounts", BAD, b"a1")
    first = Worker(app, MemoryTransport(broker, "shop"), stats_interval=0)
    await first.start()
    try:
        await wait_for(lambda: len(broker.messages("shop-dlq")) == 1)
        await wait_for(lambda: first.table("accounts_by_id") != {})
    finally:
        await first.stop()
    second = Worker(app, MemoryTransport(broker, "shop"), stats_interval=0)
    await second.start()
    try:
        broker.produce("orders", msgspec.json.encode(Order(account_id="a1", amount=1.0)), b"a1")
        await wait_for(lambda: len(broker.messages("enriched")) == 1)
        enriched = msgspec.json.decode(broker.messages("enriched")[0].value or b"", type=Enriched)
        assert enriched.tier == "gold"
        assert len(broker.messages("shop-dlq")) == 1
    finally:
        await second.stop()


async def test_a_bad_record_a_global_table_follows_is_dead_lettered_and_reading_goes_on() -> None:
    app = join_app(global_=True, partitions=1)
    broker = MemoryBroker()
    for topic in app.topics.values():
        broker.create_topic(topic.name, topic.partitions, topic.config)
    broker.produce("accounts", _account("a1", "gold"), b"a1")
    worker = Worker(app, MemoryTransport(broker, "shop"), stats_interval=0)
    await worker.start()
    try:
        await wait_for(lambda: worker.table("accounts_by_id") != {})
        broker.produce("accounts", BAD, b"a1")
        broker.produce("accounts", _account("a2", "silver"), b"a2")
        await wait_for(lambda: "a2" in worker.table("accounts_by_id"))
        assert worker.table("accounts_by_id")["a1"].tier == "gold"
        assert [(m.key, m.value) for m in broker.messages("shop-dlq")] == [(b"a1", BAD)]
        assert worker.running
    finally:
        await worker.stop()
