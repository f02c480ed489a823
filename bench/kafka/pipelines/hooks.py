"""Sink hooks of the benchmark pipelines: count (P1, P2) or sum batches (P3), and tell the
harness, on stdout, when the first element arrived and when the BENCH_N-th one did.

The protocol (one JSON object per line, wall-clock `time.time()` so the harness can compare it
with when it launched the process) is the same for every implementation; see
bench/kafka/peers/common.py, which the peers use, and which this file cannot import because
the worker package carries only its own hooks.
"""

import atexit
import json
import os
import sys
import time
import zlib

_N = int(os.environ.get("BENCH_N", "0"))
_count = 0
_total = 0.0
_started = False


def _say(event: str, **fields: object) -> None:
    sys.stdout.write(json.dumps({"ev": event, "t": time.time(), **fields}) + "\n")
    sys.stdout.flush()


# The final count, after a graceful stop: more than N means something was counted twice.
atexit.register(lambda: _say("exit", count=_count))


def first_input(order):  # type: ignore[no-untyped-def]
    """P2: the clock starts at the first *input* order, not at the first re-keyed one: an
    implementation may forward most of the backlog before it reads any of it back, and a
    window opened at the first output would leave that work out. Costs one call per order."""
    global _started
    if not _started:
        _started = True
        _say("first")
    return order


def count_order(order):  # type: ignore[no-untyped-def]
    """P1 and P2: count decoded orders."""
    global _count
    _count += 1
    if _count == 1:
        _say("first")
    if _count % 10_000 == 0:  # so a run that times out says how far it got
        _say("progress", count=_count)
    if _count == _N:
        _say("done", count=_count)


def sum_batch(batch):  # type: ignore[no-untyped-def]
    """P3: sum each batch's amounts; the running total lets the harness spot lost or
    duplicated orders."""
    global _count, _total
    if _count == 0:
        _say("first")
    before = _count
    _count += len(batch)
    _total += sum(o.amount for o in batch)
    if before < _N <= _count:
        _say("done", count=_count, total=_total)


_totals: dict = {}


def count_total(row):  # type: ignore[no-untyped-def]
    """P4: count the rows the aggregation passes on (one per order) and keep each account's
    latest, its table row; the `done` report carries them, so the harness can check every
    account's count and sum."""
    global _count
    _count += 1
    _totals[row.account_id] = (row.orders, row.amount)
    if _count % 10_000 == 0:
        _say("progress", count=_count)
    if _count == _N:
        _say("done", count=_count, table=_totals)


_tiers: dict = {}
_digest = 0


def check_enriched(order):  # type: ignore[no-untyped-def]
    """P6: count the enriched orders, each tier's share, the amounts, and a digest of every
    (order id, tier) pair; `done` reports them, so the harness can check that every order got
    its account's tier (peers/common.py `Counter.enriched` does the same)."""
    global _count, _total, _digest
    _count += 1
    if _count == 1:
        _say("first")
    _total += order.amount
    tier = order.tier
    _tiers[tier] = _tiers.get(tier, 0) + 1
    _digest += zlib.crc32(f"{order.id}:{tier}".encode())
    if _count % 10_000 == 0:
        _say("progress", count=_count)
    if _count == _N:
        _say("done", count=_count, total=_total, tiers=_tiers, digest=_digest)
