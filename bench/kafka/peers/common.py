"""What every peer implementation shares: its command line and the report protocol.

The harness (bench/kafka/run.py) reads one JSON object per stdout line: `{"ev": "first", "t":
...}` when the first element reached the pipeline's end and `{"ev": "done", "t": ..., "count":
...}` when the N-th did, with wall-clock times so it can subtract its own launch time. The
streamc workers print the same lines from their sink hooks (bench/kafka/pipelines/hooks.py).
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import time
import zlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Args:
    bootstrap: str
    topic: str
    group: str
    n: int
    pipeline: str
    commit_interval: float
    session_timeout_ms: int
    heartbeat_interval_ms: int
    fetch_max_wait_ms: int
    state_dir: str
    accounts_topic: str = ""  # P6: the compacted accounts topic (keyed by account id)
    accounts: int = 0  # P6: how many records it holds


def parse_args(argv: list[str] | None = None, **extra: dict[str, object]) -> tuple[Args, dict]:
    """The options every peer takes (the harness passes all of them), plus `extra` ones given
    as `name={"choices": [...], "default": ...}`; returns (Args, {extra name: value})."""
    p = argparse.ArgumentParser()
    p.add_argument("--bootstrap", required=True, help="host:port")
    p.add_argument("--topic", required=True, help="input topic (4 partitions, JSON orders)")
    p.add_argument("--group", required=True, help="consumer group / application id")
    p.add_argument("--n", type=int, required=True, help="orders to expect")
    p.add_argument("--pipeline", choices=("p1", "p2", "p3", "p4", "p6"), required=True)
    p.add_argument("--commit-interval", type=float, default=1.0)
    p.add_argument("--session-timeout-ms", type=int, default=2000)
    p.add_argument("--heartbeat-interval-ms", type=int, default=300)
    p.add_argument("--fetch-max-wait-ms", type=int, default=100)
    p.add_argument("--state-dir", default="/tmp", help="where a peer may keep local files")
    p.add_argument("--accounts-topic", default="", help="P6: the accounts topic")
    p.add_argument("--accounts", type=int, default=0, help="P6: records in the accounts topic")
    for name, spec in extra.items():
        p.add_argument("--" + name.replace("_", "-"), **spec)  # type: ignore[arg-type]
    ns = p.parse_args(argv)
    common = Args(
        ns.bootstrap,
        ns.topic,
        ns.group,
        ns.n,
        ns.pipeline,
        ns.commit_interval,
        ns.session_timeout_ms,
        ns.heartbeat_interval_ms,
        ns.fetch_max_wait_ms,
        ns.state_dir,
        ns.accounts_topic,
        ns.accounts,
    )
    return common, {name: getattr(ns, name) for name in extra}


def say(event: str, **fields: object) -> None:
    # Straight to file descriptor 1: Faust's worker replaces sys.stdout with its logger.
    os.write(1, (json.dumps({"ev": event, "t": time.time(), **fields}) + "\n").encode())


class Counter:
    """Counts elements at the pipeline's end; reports the first and the N-th.

    `add(k)` costs one comparison on the hot path; the report happens twice per run.
    """

    __slots__ = ("began", "count", "digest", "n", "table", "tiers", "total")

    def __init__(self, n: int) -> None:
        self.n = n
        self.count = 0
        self.total = 0.0
        self.table: dict[str, tuple[int, float]] = {}  # P4: each account's latest row
        self.tiers: dict[str | None, int] = {}  # P6: enriched orders per tier
        self.digest = 0  # P6: the sum of crc32("<order id>:<tier>") over every order
        self.began = False
        # The final count, after a graceful stop: more than N means something was counted
        # twice (`done` fires at the N-th, so it cannot tell).
        atexit.register(lambda: say("exit", count=self.count))

    def started(self) -> None:
        """The first input element is in hand: the clock starts (P2: not at the first output;
        batch counters: before the first batch is decoded). Said once."""
        if not self.began:
            self.began = True
            say("first")

    def one(self) -> None:
        self.count += 1
        if self.count == 1:
            self.started()
        if self.count % 10_000 == 0:  # so a run that times out says how far it got
            say("progress", count=self.count)
        if self.count == self.n:
            say("done", count=self.count)

    def row(self, account: str, orders: int, amount: float) -> None:
        """P4: the table row an order updated (account, its count and sum of amounts so far);
        `done` reports the table, so the harness can check every account."""
        self.table[account] = (orders, amount)
        self.count += 1
        if self.count % 10_000 == 0:
            say("progress", count=self.count)
        if self.count == self.n:
            say("done", count=self.count, table=self.table)

    def enriched(self, oid: str, tier: str | None, amount: float) -> None:
        """P6: an order enriched with its account's tier (None: no account); `done` reports
        the tiers' counts, the amounts and a digest of every (order id, tier) pair, so the
        harness can check each order got the right tier (pipelines/hooks.py's
        `check_enriched` does the same)."""
        self.count += 1
        if self.count == 1:
            self.started()
        self.total += amount
        self.tiers[tier] = self.tiers.get(tier, 0) + 1
        self.digest += zlib.crc32(f"{oid}:{tier}".encode())
        if self.count % 10_000 == 0:
            say("progress", count=self.count)
        if self.count == self.n:
            say("done", count=self.count, total=self.total, tiers=self.tiers, digest=self.digest)

    def add(self, k: int) -> None:
        """`k` more elements at once (the raw loops count a fetched batch in one step, and
        call `started` before they decode it, so its decoding is inside the window too)."""
        before = self.count
        self.count += k
        if k:
            self.started()
        if before < self.n <= self.count:
            say("done", count=self.count)

    def batch(self, size: int, total: float) -> None:
        """P3: a batch of `size` elements whose amounts sum to `total`."""
        if self.count == 0:
            self.started()
        before = self.count
        self.count += size
        self.total += total
        if before < self.n <= self.count:
            say("done", count=self.count, total=self.total)


@dataclass(frozen=True)
class LatencyArgs:
    """What the latency peers (lat_*.py) take: a copy or re-key pipeline from `topic` to `out`."""

    bootstrap: str
    topic: str
    out: str
    group: str
    pipeline: str  # "copy" or "rekey"
    commit_interval: float
    session_timeout_ms: int
    heartbeat_interval_ms: int
    fetch_max_wait_ms: int
    state_dir: str


def latency_args(argv: list[str] | None = None) -> LatencyArgs:
    p = argparse.ArgumentParser()
    p.add_argument("--bootstrap", required=True, help="host:port")
    p.add_argument("--topic", required=True, help="input topic (4 partitions, JSON orders)")
    p.add_argument("--out", required=True, help="output topic")
    p.add_argument("--group", required=True, help="consumer group / application id")
    p.add_argument("--pipeline", choices=("copy", "rekey"), required=True)
    p.add_argument("--commit-interval", type=float, default=1.0)
    p.add_argument("--session-timeout-ms", type=int, default=2000)
    p.add_argument("--heartbeat-interval-ms", type=int, default=300)
    p.add_argument("--fetch-max-wait-ms", type=int, default=100)
    p.add_argument("--state-dir", default="/tmp", help="where a peer may keep local files")
    ns = p.parse_args(argv)
    return LatencyArgs(
        ns.bootstrap,
        ns.topic,
        ns.out,
        ns.group,
        ns.pipeline,
        ns.commit_interval,
        ns.session_timeout_ms,
        ns.heartbeat_interval_ms,
        ns.fetch_max_wait_ms,
        ns.state_dir,
    )
