"""The cycle collector's settings while a worker runs (`STREAMC_GC`).

A worker's heap is mostly what start-up made (modules, the app, the clients, metadata) and
never frees; per message it makes short-lived objects, nearly all freed by reference counts.
With CPython's defaults, every 700 net container allocations start a young collection, and
every full collection walks the whole start-up heap again (about 29,000 objects in a Kafka
worker, 4 ms at best, 10-135 ms on a loaded machine), a pause in which no message moves: at a
steady input rate it lands in the tail latency (the latency benchmark's rekey worker, 20 s at
10,000 orders/s: 10 full and 1,325 young collections, 1.2 s of collecting in all).

So once a worker has started, `acquire` moves everything alive then into the permanent
generation (`gc.freeze()`: never scanned again, a full collection walks only what came later)
and raises the young threshold (fewer, still short, young collections). `release`, when the
last running worker stops, puts back the thresholds and unfreezes, so a program that ran a
worker (a test, a tool) gets its collector back as it was. `STREAMC_GC=default` leaves the
collector alone.

No `gc.collect()` before the freeze: measured at the start of the benchmark workers, it found
0 to 15 unreachable objects, and it would cost every worker start a full collection (in a test
process, a large heap). Whatever garbage a freeze does keep, the unfreeze at the stop returns.
"""

from __future__ import annotations

import gc
import logging
import os

__all__ = ["GC_ENV", "TUNED_THRESHOLD", "acquire", "release"]

GC_ENV = "STREAMC_GC"
# Young collections every 10,000 net container allocations instead of 700: each walks only
# the young objects still alive (most per-message ones are freed by reference counts before),
# so it stays short, and there are 14 times fewer of them.
TUNED_THRESHOLD = (10_000, 10, 10)

_holders = 0  # workers holding the policy
_saved: tuple[int, int, int] | None = None  # the thresholds before the first acquire
_unfreeze = False  # nothing was frozen before the first acquire: the last release unfreezes

log = logging.getLogger("streamc")


def _wanted() -> bool:
    choice = os.environ.get(GC_ENV, "tuned").strip().lower()
    if choice in ("tuned", ""):
        return True
    if choice != "default":
        log.warning("%s=%r is neither 'tuned' nor 'default': collector left alone", GC_ENV, choice)
    return False


def acquire() -> bool:
    """Apply the policy for one more running worker (the first applies it); False if
    `STREAMC_GC=default` says to leave the collector alone. Pair each True with `release`."""
    global _holders, _saved, _unfreeze
    if not _wanted():
        return False
    if _holders == 0:
        _saved = gc.get_threshold()
        # A program that froze objects itself keeps them frozen: unfreezing at the stop
        # would undo its freeze too (ours then stays, which only keeps start-up objects).
        _unfreeze = gc.get_freeze_count() == 0
        gc.freeze()
        gc.set_threshold(*TUNED_THRESHOLD)
    _holders += 1
    return True


def release() -> None:
    """One worker holding the policy stopped; the last one puts the collector back."""
    global _holders, _saved
    if _holders == 0:
        return
    _holders -= 1
    if _holders == 0 and _saved is not None:
        gc.set_threshold(*_saved)
        _saved = None
        if _unfreeze:
            gc.unfreeze()
