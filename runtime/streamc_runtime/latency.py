"""`Latency`: a fixed-bucket histogram of durations kept as plain numbers.

The worker records commit durations and sampled processing times in these, whether or not
metrics are served; `metrics.py` turns them into Prometheus histograms when scraped. It is
separate from `metrics.py` so a worker without `--metrics-port` never imports prometheus-client.
"""

from __future__ import annotations

from bisect import bisect_left

__all__ = ["BUCKETS", "Latency"]

# Upper bounds in seconds: from a fast hook's tens of microseconds to a slow sink or commit.
BUCKETS: tuple[float, ...] = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class Latency:
    """Counts per bucket (not cumulative; the last one is +Inf), their sum and total."""

    __slots__ = ("count", "counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        # `bisect_left`: a value equal to a bound belongs to that bucket (`le` is inclusive).
        self.counts[bisect_left(BUCKETS, seconds)] += 1
        self.sum += seconds
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """`(le, count)` pairs as Prometheus wants them, ending with `+Inf`."""
        out: list[tuple[str, int]] = []
        total = 0
        for bound, n in zip((*map(str, BUCKETS), "+Inf"), self.counts, strict=True):
            total += n
            out.append((bound, total))
        return out
