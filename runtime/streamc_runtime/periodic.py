"""The worker's timed background tasks: the commit loop (when processed work is committed:
soon after it is done, at most once per `commit_interval`) and the periodic stats line."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .worker import Worker

__all__ = ["commit_loop", "stats_loop"]

logger = logging.getLogger("streamc")

# How often the commit loop looks for something to commit once an interval has passed (s).
_COMMIT_POLL = 0.1


async def commit_loop(worker: Worker) -> None:
    """Commit processed work at most once per `commit_interval`, timed from the start of
    the last commit, not from the worker's start: once an interval has passed, look every
    `_COMMIT_POLL` seconds for something processed and commit it at once. So the first
    messages processed after start, an assignment or an idle spell are committed within
    a poll, not up to an interval later at a phase fixed by the start (a worker killed
    soon after its first batch used to repeat it all), and a busy worker still commits
    once per interval. Offsets that only record where reading started (nothing processed
    yet) wait for an interval, or go with the first processed work: committing them
    alone would put that work an interval later. From the start of the last commit, not
    its end: a commit waits for the flush of every output before it, which with a busy
    agent or a slow broker takes a good part of a second, and each one would push every
    later commit back by as much (a worker killed then repeats that much more)."""
    loop = asyncio.get_running_loop()
    interval = worker.commit_interval
    poll = min(interval, _COMMIT_POLL)
    tracker = worker.offsets
    due = loop.time()  # processed work may be committed from then on
    idle_due = due + interval  # and offsets with nothing processed from then on
    while True:
        now = loop.time()
        await asyncio.sleep(due - now if due > now else poll)
        offsets = tracker.to_commit()
        if not offsets:
            continue
        parts = tracker.partitions
        processed = any(parts[tp].progressed() for tp in offsets)
        if not processed and loop.time() < idle_due:
            continue
        began = loop.time()
        committed = await worker.commit()
        idle_due = began + interval
        if processed or not committed:
            due = idle_due


async def stats_loop(worker: Worker) -> None:
    last_in, last_out, last_t = worker.events_in, worker.sent, time.monotonic()
    while True:
        await asyncio.sleep(worker.stats_interval)
        now = time.monotonic()
        dt = max(now - last_t, 1e-9)
        committed = {
            f"{tp.topic}[{tp.partition}]": s.committed
            for tp, s in sorted(worker.offsets.partitions.items())
            if s.committed is not None
        }
        logger.info(
            "stats: in %.1f/s out %.1f/s in-flight %d dead-letters %d agent-errors %d committed %s",
            (worker.events_in - last_in) / dt,
            (worker.sent - last_out) / dt,
            worker.offsets.in_flight(),
            worker.dead_letters,
            worker.agent_errors,
            committed,
        )
        last_in, last_out, last_t = worker.events_in, worker.sent, now
